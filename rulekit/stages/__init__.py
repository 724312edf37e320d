"""Pipeline stages: each reads its inputs from disk, does one thing, and writes its outputs atomically."""

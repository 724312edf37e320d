"""The whole DVC pipeline on a smoke configuration, in a fresh copy of the repository."""

import json
import os
import shutil
import subprocess

import yaml

from conftest import REPO, smoke_params

#: Pipeline outputs and local state at the top of the repository; the copy starts without them.
TOP_LEVEL_SKIPPED = {".git", "data", "models", "samples", "checkpoints", "metrics", "plots", "reports", "dvc.lock",
                     ".pytest_cache", ".hypothesis"}


def skip(folder: str, names: list[str]) -> set[str]:
    skipped = {name for name in names if name == "__pycache__" or name.endswith(".egg-info")}
    if folder == str(REPO):
        skipped |= TOP_LEVEL_SKIPPED & set(names)
    return skipped


def run(command: list[str], cwd) -> subprocess.CompletedProcess:
    result = subprocess.run(command, cwd=cwd, capture_output=True, text=True, timeout=900, env={**os.environ, "RULEKIT_QUIET": "1"})
    assert result.returncode == 0, f"{' '.join(command)} failed:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
    return result


def test_dvc_repro_runs_every_stage_and_metrics_diff_works(tmp_path):
    repo = tmp_path / "repo"
    shutil.copytree(REPO, repo, ignore=skip)
    (repo / "params.yaml").write_text(yaml.safe_dump(smoke_params(tasks=["bars", "mirror"]), sort_keys=False))
    run(["git", "init", "-q"], repo)
    run(["git", "-c", "user.name=t", "-c", "user.email=t@t", "add", "-A"], repo)
    run(["git", "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "smoke"], repo)

    repro = run(["dvc", "repro"], repo)
    assert "rulekit: did the models learn the rules?" in repro.stdout + repro.stderr
    for task in ("bars", "mirror"):
        metrics = json.loads((repo / "metrics" / task / "ddpm-unet" / "none.json").read_text())["metrics"]
        for name in ("validity", "coarse_accuracy", "fine_conformity_1pct", "mean_abs_residual", "band_ratio", "wasserstein_mean", "memorised_fraction"):
            estimate = metrics[name]
            assert set(estimate) == {"value", "low", "high"}
        probes = json.loads((repo / "metrics" / task / "ddpm-unet" / "probes.json").read_text())
        assert set(probes["best_auc"]) == {"pixels", "noised-pixels", "unet-mid"}
        for path in (
            f"plots/residuals/{task}-ddpm-unet-none.csv",
            f"plots/scatter/{task}-ddpm-unet-none.csv",
            f"plots/figures/{task}-ddpm-unet-none.png",
            f"plots/figures/probe-{task}-ddpm-unet.png",
            f"plots/probes/{task}-ddpm-unet.csv",
            f"plots/loss/{task}-ddpm-unet.csv",
            f"reports/figures/{task}-ddpm-unet-none-rule.png",
        ):
            assert (repo / path).stat().st_size > 0, path
    report = (repo / "reports" / "report.md").read_text()
    assert "## bars" in report and "## mirror" in report and "figures/bars-ddpm-unet-none-rule.png" in report

    second = run(["dvc", "repro"], repo)
    assert "Running stage" not in second.stdout

    run(["git", "-c", "user.name=t", "-c", "user.email=t@t", "add", "-A"], repo)
    run(["git", "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "results"], repo)
    changed = smoke_params(tasks=["bars", "mirror"])
    changed["evaluate"]["n_resamples"] = 60
    (repo / "params.yaml").write_text(yaml.safe_dump(changed, sort_keys=False))
    status = run(["dvc", "status"], repo).stdout
    assert "evaluate@bars-ddpm-unet-none" in status and "train@" not in status and "probe@" not in status
    rerun = run(["dvc", "repro"], repo)
    assert "Running stage 'evaluate@bars-ddpm-unet-none'" in rerun.stdout
    assert "Running stage 'train@" not in rerun.stdout and "Running stage 'sample@" not in rerun.stdout
    diff = run(["dvc", "metrics", "diff", "--json"], repo)
    json.loads(diff.stdout)

"""The whole DVC pipeline on a smoke configuration, in a fresh copy of the repository."""

import json
import os
import shutil
import subprocess

import yaml

from conftest import REPO, smoke_params

#: Pipeline outputs and local state at the top of the repository; the copy starts without them.
TOP_LEVEL_SKIPPED = {".git", "data", "models", "samples", "classifiers", "evaluation", "checkpoints", "metrics", "plots",
                     "reports", "dvc.lock", ".pytest_cache", ".hypothesis"}


def skip(folder: str, names: list[str]) -> set[str]:
    skipped = {name for name in names if name == "__pycache__" or name.endswith(".egg-info")}
    if folder == str(REPO):
        skipped |= TOP_LEVEL_SKIPPED & set(names)
    if folder == str(REPO / ".dvc"):
        skipped |= {"cache", "tmp"} & set(names)
    return skipped


def run(command: list[str], cwd) -> subprocess.CompletedProcess:
    result = subprocess.run(command, cwd=cwd, capture_output=True, text=True, timeout=900, env={**os.environ, "RULEKIT_QUIET": "1"})
    assert result.returncode == 0, f"{' '.join(command)} failed:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
    return result


#: The strategies the smoke pipeline evaluates: the paper's remedy and an oracle, beside the baseline.
GUIDANCE = ["none", "classifier", "rule-gradient"]
GUIDANCE_SETTINGS = {"none": {}, "classifier": {"scale": 1.0}, "rule-gradient": {"scale": 1.0, "through_network": False}}


def pipeline_params(**overrides) -> dict:
    return smoke_params(tasks=["bars", "mirror"], guidance=GUIDANCE, guidance_settings=GUIDANCE_SETTINGS, **overrides)


def test_dvc_repro_runs_every_stage_and_metrics_diff_works(tmp_path):
    repo = tmp_path / "repo"
    shutil.copytree(REPO, repo, ignore=skip)
    (repo / "params.yaml").write_text(yaml.safe_dump(pipeline_params(), sort_keys=False))
    run(["git", "init", "-q"], repo)
    run(["git", "-c", "user.name=t", "-c", "user.email=t@t", "add", "-A"], repo)
    run(["git", "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "smoke"], repo)

    repro = run(["dvc", "repro"], repo)
    assert "rulekit: did the models learn the rules?" in repro.stdout + repro.stderr
    for task in ("bars", "mirror"):
        for guidance in GUIDANCE:
            metrics = json.loads((repo / "metrics" / task / "ddpm-unet" / "guidance" / f"{guidance}.json").read_text())["metrics"]
            for name in ("validity", "coarse_accuracy", "fine_conformity_1pct", "mean_abs_residual", "band_ratio", "wasserstein_mean", "memorised_fraction"):
                estimate = metrics[name]
                assert set(estimate) == {"value", "low", "high"}
            assert (repo / "evaluation" / task / "ddpm-unet" / guidance / "grid.png").stat().st_size > 0
        probes = json.loads((repo / "metrics" / task / "ddpm-unet" / "probes.json").read_text())
        assert set(probes["best_auc"]) == {"pixels", "noised-pixels", "unet-mid"}
        classifier = json.loads((repo / "metrics" / task / "ddpm-unet" / "classifier.json").read_text())
        assert classifier["task"] == task
        for path in (
            f"plots/residuals/{task}-ddpm-unet-none.csv",
            f"plots/scatter/{task}-ddpm-unet-none.csv",
            f"plots/figures/{task}-ddpm-unet-none.png",
            f"plots/figures/probe-{task}-ddpm-unet.png",
            f"plots/probes/{task}-ddpm-unet.csv",
            f"plots/loss/{task}-ddpm-unet.csv",
            f"reports/figures/{task}-ddpm-unet-none-rule.png",
            f"plots/classifier/{task}-ddpm-unet.csv",
            f"plots/figures/classifier-{task}-ddpm-unet.png",
            f"classifiers/{task}/ddpm-unet/classifier.safetensors",
        ):
            assert (repo / path).stat().st_size > 0, path
    report = (repo / "reports" / "report.md").read_text()
    assert "## bars" in report and "## mirror" in report and "figures/bars-ddpm-unet-none-rule.png" in report
    assert "| ddpm-unet | classifier |" in report and "Does the rule classifier see fine violations?" in report

    second = run(["dvc", "repro"], repo)
    assert "Running stage" not in second.stdout

    run(["git", "-c", "user.name=t", "-c", "user.email=t@t", "add", "-A"], repo)
    run(["git", "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "results"], repo)
    changed = pipeline_params()
    changed["evaluate"]["n_resamples"] = 60
    (repo / "params.yaml").write_text(yaml.safe_dump(changed, sort_keys=False))
    status = run(["dvc", "status"], repo).stdout
    assert "evaluate@bars-ddpm-unet-none" in status and "train@" not in status and "probe@" not in status
    assert "train_classifier@" not in status
    rerun = run(["dvc", "repro"], repo)
    assert "Running stage 'evaluate@bars-ddpm-unet-none'" in rerun.stdout
    assert "Running stage 'train@" not in rerun.stdout and "Running stage 'sample@" not in rerun.stdout
    diff = run(["dvc", "metrics", "diff", "--json"], repo)
    json.loads(diff.stdout)

    # The documented sweep of the classifier scale re-runs only the classifier's evaluations.
    run(["git", "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qam", "resamples"], repo)
    sweep = run(["dvc", "exp", "run", "-S", "guidance_settings.classifier.scale=3"], repo)
    ran = {line.split("'")[1] for line in sweep.stdout.splitlines() if line.startswith("Running stage")}
    assert ran == {"evaluate@bars-ddpm-unet-classifier", "evaluate@mirror-ddpm-unet-classifier", "report"}, ran

"""The whole extension surface of rulekit: one hook per kind of plugin object.

A plugin is a module (or any object) with functions marked ``@rulekit.hookimpl`` whose names match
the hooks below. rulekit's own tasks are plugins registered exactly like a third party's; a third
party makes its package a plugin by naming the module in its ``pyproject.toml``::

    [project.entry-points.rulekit]
    my_rules = "my_package.rulekit_plugin"

Every hook takes no arguments and returns a list of objects of its kind. Each object carries a
``name`` (unique within its kind across all installed plugins) and a one-line ``description``.
Hooks are called once, when the registry first loads; a hook that raises, or returns something that
is not a list of valid objects, is reported by plugin name and ignored, and the others still load.
"""

from __future__ import annotations

import pluggy

PROJECT_NAME = "rulekit"

hookspec = pluggy.HookspecMarker(PROJECT_NAME)
hookimpl = pluggy.HookimplMarker(PROJECT_NAME)


@hookspec
def rulekit_tasks() -> list:
    """Return the rule tasks this plugin provides.

    Each item is an instance of :class:`rulekit.tasks.Task`: a family of synthetic images with
    named continuous features, a renderer, a fine rule (``residual``), a coarse rule
    (``coarse_ok``), a measurer that reads features back from pixels, and ways to produce samples
    that break the fine rule by a chosen amount or break the coarse rule. A task may also offer a
    differentiable measurer (``soft_read``), which lets ``rule-gradient`` guidance steer toward
    its rule. Its ``name`` is what
    users type (``rulekit generate NAME``) and what ``params.yaml`` lists under ``tasks``.
    """


@hookspec
def rulekit_models() -> list:
    """Return the generative model families this plugin provides.

    A model family owns a network, the objective that trains it and the step that samples from it;
    rulekit's shared training and sampling loops drive it. Its ``name`` is what ``params.yaml``
    lists under the models to train.
    """


@hookspec
def rulekit_guidance() -> list:
    """Return the guidance strategies this plugin provides.

    Each item is an instance of :class:`rulekit.guidance.Guidance`: a name, a description, what
    it knows of the rule (``prior_knowledge``), the settings it reads from ``params.yaml``'s
    ``guidance_settings.<name>``, and ``prepare``, which returns the run that changes sampling for
    one task and model. A run either contributes the gradient of a log-probability of the rule
    holding given the noisy image, which the model family turns into its own parameterisation,
    or draws more samples and keeps the ones it ranks best.
    """


@hookspec
def rulekit_metrics() -> list:
    """Return the metrics this plugin provides.

    A metric is a function of measured features (and the task) that returns named numbers, which
    the evaluation stage writes to ``metrics/`` for ``dvc metrics diff``.
    """


@hookspec
def rulekit_probe_inputs() -> list:
    """Return the probe inputs this plugin provides.

    A probe input turns images into the feature vectors that a detectability probe (a
    scikit-learn classifier) sees: raw pixels, pixels noised to a diffusion level, a trained
    network's internal activations, a rule classifier's features. Each is an instance of
    :class:`rulekit.probes.ProbeInput`; ``rulekit probe`` reports, for each, how well
    rule-abiding images can be told from images that break the fine rule by δ.
    """

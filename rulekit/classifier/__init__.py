"""The noise-conditioned rule classifier: its network, and how it is trained and evaluated."""

from rulekit.classifier.network import RuleClassifier, build_classifier, load_classifier, save_classifier

__all__ = ["RuleClassifier", "build_classifier", "load_classifier", "save_classifier"]

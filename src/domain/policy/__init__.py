"""The rules that protect recipients: categories, frequency caps, and the policy decision
(``domain.policy.decision``, kept out of this module because it needs domain.recipient, which
needs the limits defined here)."""

from domain.policy.category import CapAction, Category, CategoryKind
from domain.policy.limits import Limits

__all__ = ["CapAction", "Category", "CategoryKind", "Limits"]

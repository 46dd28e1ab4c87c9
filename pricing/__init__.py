"""pricing: what every request cost, and what it would have cost elsewhere.

Price catalog (LiteLLM's bundled map read offline, dated sheets, overrides),
request cost, the local cost model and energy meters, the SQLite ledger,
budgets, monthly reports and the cost estimator.

This package knows nothing of ``ds4router`` or ``local_engine`` and never
imports mlx or litellm (a test checks it), so any component can use it.
"""

from __future__ import annotations

from pricing.errors import PricingError

__all__ = ["PricingError"]

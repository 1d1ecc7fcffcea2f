"""Contract checks for plugin authors, shipped in the wheel: one call from your own pytest.

```python
from mmrl_harness.testing import check_fusion_adapter, check_task

def test_my_adapter_meets_the_contract():
    check_fusion_adapter("my_adapter", options={"width": 32})   # or the class itself

def test_my_task_meets_the_contract():
    check_task("my_task")                                        # or a YAML path
```

Each call runs every check, raises ``ContractViolation`` (an ``AssertionError``) listing all the
failures, and returns a ``ContractReport``. The harness's own adapters and tasks are checked by
this same code, and ``mmrl plugins doctor`` runs it on installed plugins. Importing this package
is cheap; torch loads when a fusion check runs.
"""

from __future__ import annotations

from mmrl_harness.testing.fusion import FUSION_CHECKS, check_fusion_adapter, default_families
from mmrl_harness.testing.report import CheckResult, ContractReport, ContractViolation
from mmrl_harness.testing.tasks import TASK_CHECKS, check_task

__all__ = [
    "FUSION_CHECKS",
    "TASK_CHECKS",
    "CheckResult",
    "ContractReport",
    "ContractViolation",
    "check_fusion_adapter",
    "check_task",
    "default_families",
]

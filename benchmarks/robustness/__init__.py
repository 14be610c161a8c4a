"""A proxy for real-world robustness: the real test split made harder in three ways.

    python -m benchmarks.robustness build                      # the proxy sets, once
    python -m benchmarks.robustness evaluate --run-id <id>     # any models, one table
    python -m benchmarks.robustness compare [--configs none/none background/top]

``build`` writes the ``backgrounds``, ``lighting`` and ``geometry`` sets (see ``proxy``)
from the dataset's test split, and a contact sheet of each. ``evaluate`` scores models on
the test split and each set. ``compare`` trains every aug x finetune config the robustness
issue compares, reusing finished runs, then scores them all. Run it from the project root.
"""

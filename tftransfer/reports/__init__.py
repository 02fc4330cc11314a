"""Reports: what a classifier learned and what the data holds, as JSON and pages.

* `evaluation`, `report_page`: a classifier's report (`evaluate`);
* `label_report`, `label_page`: a multi-label classifier's;
* `comparison`: transfer learning against training from scratch;
* `data_audit`, `copies`, `audit_page`: the data's duplicates, leaks and
  likely label errors (`audit`).
"""

from tftransfer._lazy import lazy_names as _lazy_names

_PUBLIC = {
    "AuditReport": "tftransfer.reports.data_audit",
    "audit": "tftransfer.reports.data_audit",
    "compare": "tftransfer.reports.comparison",
    "evaluate": "tftransfer.reports.evaluation",
}

__all__ = sorted(_PUBLIC)

__getattr__, __dir__ = _lazy_names(globals(), _PUBLIC)

"""``lmdev.secure``: the model-file scanner, safe loading, encryption at rest, signing, the audit
log and redaction of secrets.

    import lmdev.secure
    result = lmdev.secure.scan_file("model.pt")        # ScanResult: verdict, findings
    tensors = lmdev.secure.load("model.safetensors")   # scan, then load without unpickling code
    clean = lmdev.secure.redact("HF_TOKEN=hf_...")     # 'HF_TOKEN=[REDACTED]'
"""

from __future__ import annotations

from lmdev.secure.load import load
from lmdev.secure.redact import redact
from lmdev.secure.scan import UnsafeModelError, require_safe, scan_file, scan_paths
from lmdev.secure.types import Finding, ScanResult

__all__ = ["Finding", "ScanResult", "UnsafeModelError", "load", "redact", "require_safe", "scan_file",
           "scan_paths"]

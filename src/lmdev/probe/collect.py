"""Collect every fact about a machine through one source, the collectors running side by side."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

from lmdev.probe.gpu import collect_accelerators
from lmdev.probe.host import collect_host
from lmdev.probe.software import collect_software
from lmdev.probe.source import LocalSource, Source, guarded
from lmdev.probe.types import AcceleratorFacts, Facts, HostFacts, ProbeError, SoftwareFacts


def collect(src: Source | None = None) -> Facts:
    """Facts about the machine behind ``src`` (this machine by default). Never raises for a
    collector that fails: the failure is listed in ``probe_errors`` and the rest stands."""
    src = src or LocalSource()
    host_errors: list[ProbeError] = []
    gpu_errors: list[ProbeError] = []
    sw_errors: list[ProbeError] = []
    with ThreadPoolExecutor(max_workers=3) as pool:
        gpus = pool.submit(guarded, "accelerators", lambda: collect_accelerators(src, gpu_errors),
                           AcceleratorFacts(), gpu_errors)
        software = pool.submit(guarded, "software", lambda: collect_software(src, sw_errors),
                               SoftwareFacts(), sw_errors)
        host = guarded("host", lambda: collect_host(src, host_errors), HostFacts(), host_errors)
        facts = Facts(host=host, accelerators=gpus.result(), software=software.result())
    facts.probe_errors = host_errors + gpu_errors + sw_errors
    return facts

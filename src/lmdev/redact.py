"""Redaction of secrets before they reach the run store: console output, environment, configs and
command lines.

``redact(text)`` replaces known token shapes (Hugging Face, OpenAI, AWS, GitHub, W&B, age, private
key blocks, bearer tokens) and the values of secret-named assignments (``*_TOKEN=``, ``*_KEY:``,
``--password X``, ...) with ``[REDACTED]``. ``redact_value`` does the same through dicts and lists
(a string under a secret-looking key is replaced whole). ``RedactingWriter`` wraps a log
file and redacts whole lines, so a token split across two reads is still caught.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import IO, Any

MASK = "[REDACTED]"

# token shapes that are secrets wherever they appear
_TOKENS = [
    r"hf_[A-Za-z0-9]{30,}",                                   # Hugging Face
    r"sk-(?:proj-|svcacct-|admin-|ant-)?[A-Za-z0-9_\-]{20,}",  # OpenAI (and Anthropic) keys
    r"(?:AKIA|ASIA|ABIA|ACCA)[0-9A-Z]{16}",                  # AWS access key ids
    r"gh[pousr]_[A-Za-z0-9]{36,}",                            # GitHub tokens
    r"github_pat_[A-Za-z0-9_]{22,}",                          # GitHub fine-grained tokens
    r"glpat-[A-Za-z0-9_\-]{20,}",                             # GitLab
    r"xox[baprs]-[A-Za-z0-9\-]{10,}",                         # Slack
    r"AGE-SECRET-KEY-1[0-9A-Z]{58}",                          # age identities
    r"-----BEGIN [A-Z ]*PRIVATE KEY-----[\s\S]*?-----END [A-Z ]*PRIVATE KEY-----",
    r"(?i:bearer)\s+[A-Za-z0-9_\-\.=]{16,}",                  # Authorization: Bearer ...
]
# names whose value is a secret: FOO_TOKEN, API_KEY, aws_secret_access_key, PASSWORD, WANDB_API_KEY
_SECRET_NAME = r"[A-Za-z0-9_.\-]*(?:TOKEN|API_?KEY|SECRET|SECRET_?KEY|ACCESS_?KEY|PRIVATE_?KEY|PASSWORD|PASSWD|_KEY|_PAT)"
_NAME_RE = re.compile(rf"^{_SECRET_NAME}$|^(?:KEY|PASS|PWD)$", re.IGNORECASE)
_ASSIGN = re.compile(
    rf"(?P<name>\b{_SECRET_NAME})(?P<sep>\s*[=:]\s*|\"\s*:\s*\"?|'\s*:\s*'?)(?P<q>[\"']?)(?P<value>[^\s\"',;}}]{{6,}})",
    re.IGNORECASE)
_FLAG = re.compile(
    rf"(?P<flag>--?(?:{_SECRET_NAME}|password|passwd|token|api-key|secret|key))(?P<sep>[ =])(?P<value>[^\s-][^\s]*)",
    re.IGNORECASE)
_TOKEN_RE = re.compile("|".join(f"(?:{t})" for t in _TOKENS))


def redact(text: str) -> str:
    """``text`` with every secret replaced by ``[REDACTED]``."""
    if not text:
        return text
    text = _TOKEN_RE.sub(MASK, text)
    text = _ASSIGN.sub(lambda m: m.group(0) if m.group("value") == MASK or m.group("value").isdigit()
                       else f"{m.group('name')}{m.group('sep')}{m.group('q')}{MASK}", text)
    return _FLAG.sub(lambda m: f"{m.group('flag')}{m.group('sep')}{MASK}", text)


def is_secret_name(name: str) -> bool:
    return bool(_NAME_RE.match(name))


def redact_value(value: Any) -> Any:
    """Redact strings inside dicts / lists / tuples; values under secret-named keys are masked whole."""
    if isinstance(value, str):
        return redact(value)
    if isinstance(value, Mapping):
        return {k: (MASK if isinstance(k, str) and isinstance(v, str) and v and is_secret_name(k)
                    else redact_value(v))
                for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        out = [redact_value(v) for v in value]
        return out if isinstance(value, list) else tuple(out)
    return value


def redact_argv(argv: list[str]) -> list[str]:
    """A command line with secret flag values masked (``--token X`` as two words, too)."""
    out: list[str] = []
    hide_next = False
    for word in argv:
        if hide_next:
            out.append(MASK)
            hide_next = False
            continue
        flag = word.lstrip("-")
        if word.startswith("-") and "=" not in word and (is_secret_name(flag.replace("-", "_"))
                                                         or flag.lower() in ("password", "token", "api-key")):
            hide_next = True
            out.append(word)
            continue
        out.append(redact(word))
    return out


class RedactingWriter:
    """A binary log file that redacts whole lines before they are written (line breaks are
    ``\\n`` and ``\\r``; a line longer than 64 KiB is written in pieces)."""

    LIMIT = 65536

    def __init__(self, raw: IO[bytes]) -> None:
        self.raw, self.name, self._buf = raw, getattr(raw, "name", ""), b""

    def write(self, data: bytes) -> int:
        self._buf += data
        cut = max(self._buf.rfind(b"\n"), self._buf.rfind(b"\r"))
        if cut < 0 and len(self._buf) > self.LIMIT:
            cut = len(self._buf) - 1
        if cut >= 0:
            done, self._buf = self._buf[:cut + 1], self._buf[cut + 1:]
            self.raw.write(redact(done.decode("utf-8", "surrogateescape")).encode("utf-8", "surrogateescape"))
        return len(data)

    def flush(self) -> None:
        self.raw.flush()

    def close(self) -> None:
        if self._buf:
            self.raw.write(redact(self._buf.decode("utf-8", "surrogateescape")).encode("utf-8", "surrogateescape"))
            self._buf = b""
        self.raw.close()

    def __enter__(self) -> RedactingWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

"""TSIG key files as BIND's ``tsig-keygen`` and Knot's ``keymgr -t`` write them, and clear errors
for bad ones (the publishing itself runs against Knot in ``test_dns_counties.py``)."""

from __future__ import annotations

from pathlib import Path

import pytest

from common.errors import InvalidInput
from discovery.dns_publish import TsigKey, read_key_file

SECRET = "Z2Vvd2ViIHRlc3Qgc2VjcmV0LCAzMiBieXRlcy4uLiE="


@pytest.mark.parametrize(
    "text",
    [
        # BIND tsig-keygen
        f'key "geoweb-key" {{\n\talgorithm hmac-sha256;\n\tsecret "{SECRET}";\n}};\n',
        # Knot keymgr -t
        f"# hmac-sha256:geoweb-key:{SECRET}\nkey:\n  - id: geoweb-key\n"
        f"    algorithm: hmac-sha256\n    secret: {SECRET}\n",
    ],
)
def test_key_files(tmp_path: Path, text: str) -> None:
    path = tmp_path / "key"
    path.write_text(text, encoding="utf-8")
    assert read_key_file(path) == TsigKey("geoweb-key", SECRET, "hmac-sha256")


def test_bad_keys_are_clear_errors(tmp_path: Path) -> None:
    path = tmp_path / "key"
    path.write_text("not a key\n", encoding="utf-8")
    with pytest.raises(InvalidInput, match="not a TSIG key file"):
        read_key_file(path)
    with pytest.raises(InvalidInput, match="cannot read"):
        read_key_file(tmp_path / "missing")
    with pytest.raises(InvalidInput, match="not base64"):
        TsigKey("k", "not base64!")
    with pytest.raises(InvalidInput, match="unknown TSIG algorithm"):
        TsigKey("k", SECRET, "rot13")

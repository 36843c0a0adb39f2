"""data.spec decides what a data spec is: every kind it parses, and nothing that is a file name."""

import pytest

from vitkit.data.spec import KINDS, is_data_spec, parse_spec


@pytest.mark.parametrize("kind", KINDS)
def test_every_kind_is_a_spec(kind):
    spec = kind if kind == "digits" else f"{kind}:some/path"
    assert is_data_spec(spec) and is_data_spec(f"{kind}?k=v")
    assert parse_spec(spec).kind == kind


@pytest.mark.parametrize("text", ["cat.jpg", "photos/", "digits.png", "folders:x", "./wds:x", ""])
def test_file_names_are_not_specs(text):
    assert not is_data_spec(text)

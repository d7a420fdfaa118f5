import pytest

from dockvols_common.sizes import rounded_size_text, size_text
from esx_service.options import parse_size_mb


@pytest.mark.parametrize("size_mb, shown", [
    (1, "1mb"), (200, "200mb"), (1024, "1gb"), (1536, "1536mb"), (10240, "10gb"),
    (20 * 1024 * 1024, "20tb"), (1024 * 1024 + 1024, "1025gb"), (0, "0mb"), (12.3, "12.3mb"),
    (2048.0, "2gb"),
])
def test_a_size_reads_back_exactly_in_the_largest_whole_unit(size_mb: float,
                                                            shown: str) -> None:
    assert size_text(size_mb) == shown


@pytest.mark.parametrize("size_mb", [1, 300, 1024, 1536, 10240, 3 * 1024 * 1024, 62 * 1024**2])
def test_a_shown_size_is_a_valid_size_option_of_the_same_size(size_mb: int) -> None:
    assert parse_size_mb(size_text(size_mb)) == size_mb


@pytest.mark.parametrize("size_mb, shown", [
    (0, "0mb"), (0.4, "0.4mb"), (200, "200mb"), (1536, "1.5gb"), (10240, "10gb"),
    (20 * 1024 * 1024, "20tb"),
])
def test_a_usage_figure_is_rounded_to_read_at_a_glance(size_mb: float, shown: str) -> None:
    assert rounded_size_text(size_mb) == shown


def test_a_size_an_answer_did_not_carry_shows_as_unknown() -> None:
    assert size_text(None) == rounded_size_text(None) == "?"

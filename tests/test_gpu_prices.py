"""A GPU preset's public on-demand price (price_per_hour with its page, date and currency) is the default
of --price-per-hour; the flag overrides it (any currency); a price without its page, date or currency is refused."""

from __future__ import annotations

import pytest

from kvcalc.presets import load_gpu

SPHERON = (
    "https://www.spheron.network/blog/nvidia-h200-vs-b200-vs-gb200"  # 'as of 17 March 2026: H200 at $4.54/hr, B200 at $6.03/hr'
)
DECODE = ["decode", "--model", "llama3-8b", "--seq", "8k", "--batch", "32"]


@pytest.mark.parametrize("gpu, price", [("h200", 4.54), ("b200", 6.03)])
def test_presets_carry_the_price_their_page_prints(gpu: str, price: float) -> None:
    spec = load_gpu(gpu)
    assert (spec.price_per_hour, spec.price_date, spec.price_currency) == (price, "2026-03-17", "USD")
    assert spec.price_source is not None and SPHERON in spec.price_source


def test_decode_prices_tokens_at_the_presets_price_by_default(cli) -> None:
    cost = cli.json(*DECODE, "--gpu", "h200")["cost"]
    assert cost["price_per_gpu_hour"] == 4.54
    assert SPHERON in cost["price_origin"] and "2026-03-17" in cost["price_origin"]
    assert cost["cost_per_million_output_tokens"] == pytest.approx(4.54 / (cost["output_tokens_per_s"] * 3600) * 1e6)


def test_price_per_hour_overrides_the_presets_price(cli) -> None:
    cost = cli.json(*DECODE, "--gpu", "h200", "--price-per-hour", "2")["cost"]
    assert (cost["price_per_gpu_hour"], cost["price_origin"], cost["currency"]) == (2, "--price-per-hour", None)


def test_a_gpu_without_a_price_costs_nothing_unless_asked(cli) -> None:
    assert cli.json(*DECODE, "--gpu", "h100-sxm")["cost"] is None
    assert cli.json(*DECODE, "--gpu", "h100-sxm", "--price-per-hour", "3")["cost"]["price_per_gpu_hour"] == 3


def test_the_text_output_names_the_price_page(cli) -> None:
    result = cli(*DECODE, "--gpu", "h200")
    assert result.exit_code == 0
    assert f"price per GPU-hour from the h200 preset: Spheron on-demand H200 SXM, {SPHERON}, 2026-03-17" in result.stdout
    assert "cost at USD 4.54 per hour (1 GPU): USD " in result.stdout
    explained = cli(*DECODE, "--gpu", "h200", "--explain").stdout
    assert "price per hour = price per GPU-hour * GPUs = USD 4.54 * 1 = USD 4.54" in explained


def test_a_price_of_any_currency_is_printed_without_one(cli) -> None:
    result = cli(*DECODE, "--gpu", "h100-sxm", "--price-per-hour", "3")
    assert result.exit_code == 0
    assert "cost at 3 per hour (1 GPU): " in result.stdout and "USD" not in result.stdout


@pytest.mark.parametrize(
    "extra",
    [
        "price_per_hour: 2.5\n",
        "price_per_hour: 2.5\nprice_source: a page\n",
        "price_per_hour: 2.5\nprice_source: a page\nprice_date: '2026-03-17'\n",
    ],
)
def test_a_price_without_its_page_date_and_currency_is_refused(cli, tmp_path, extra: str) -> None:
    gpu = tmp_path / "g.yaml"
    gpu.write_text(
        "name: g\nmemory_bytes: 80000000000\nbandwidth_bytes_per_s: 2000000000000\nbf16_flops: 300000000000000\n" + extra
    )
    result = cli(*DECODE, "--gpu", str(gpu))
    assert result.exit_code == 2
    assert "price_per_hour, price_source, price_date and price_currency go together" in result.stderr


def test_a_currency_that_is_not_an_iso_code_is_refused(cli, tmp_path) -> None:
    gpu = tmp_path / "g.yaml"
    gpu.write_text(
        "name: g\nmemory_bytes: 80000000000\nbandwidth_bytes_per_s: 2000000000000\nbf16_flops: 300000000000000\n"
        "price_per_hour: 2.5\nprice_source: a page\nprice_date: '2026-03-17'\nprice_currency: dollars\n"
    )
    result = cli(*DECODE, "--gpu", str(gpu))
    assert result.exit_code == 2
    assert "price_currency" in result.stderr and "Traceback" not in result.stderr

"""Reference profiles: building, binning new data onto them, reading tables."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest

from kubeloop.drift import profile as profile_module
from kubeloop.drift.profile import (
    FeatureProfile,
    Profile,
    build_profile,
    counts_for,
    load_profile,
    read_table,
    save_profile,
)


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(7)


# --- numeric bins ----------------------------------------------------------------------


def test_numeric_bins_are_quantiles_between_min_and_max(rng: np.random.Generator) -> None:
    x = rng.normal(size=10_000)
    feature = build_profile({"x": x}, bins=10).feature("x")
    assert feature.kind == "numeric"
    assert feature.edges[0] == x.min()
    assert feature.edges[-1] == x.max()
    assert len(feature.edges) == 11 and feature.bins == 12
    # The minimum sits in the lowest bin, nothing lies above the maximum, and each
    # inner bin holds a tenth of the rows.
    assert feature.counts[0] == 1 and feature.counts[-1] == 0
    assert all(abs(c - 1000) <= 1 for c in feature.counts[1:-1])
    assert sum(feature.counts) == x.size


def test_repeated_values_dedupe_edges() -> None:
    x = np.array([0.0] * 90 + [1.0] * 10)
    feature = build_profile({"x": x}, bins=10).feature("x")
    assert feature.edges == [0.0, 1.0]
    assert feature.counts == [90, 10, 0]


def test_constant_column_has_one_edge() -> None:
    feature = build_profile({"x": np.full(50, 3.5)}).feature("x")
    assert feature.edges == [3.5]
    assert feature.counts == [50, 0]


def test_nan_is_left_out_and_infinities_count_in_the_outer_bins() -> None:
    x = np.array([np.nan, -np.inf, 1.0, 2.0, 3.0, 4.0, np.inf, np.inf, np.nan, np.nan])
    built = build_profile({"x": x}, bins=3)
    feature = built.feature("x")
    assert built.rows == 10
    assert feature.edges == [1.0, 2.0, 3.0, 4.0]
    assert feature.counts == [2, 1, 1, 1, 2]
    assert built.rows - sum(feature.counts) == 3  # the missing values


def test_all_missing_column_is_rejected() -> None:
    with pytest.raises(ValueError, match="'x' has no values"):
        build_profile({"x": np.full(4, np.nan)})
    with pytest.raises(ValueError, match="'c' has no values"):
        build_profile({"c": np.array(["", ""])})


def test_build_profile_checks_its_input() -> None:
    with pytest.raises(ValueError, match="different lengths"):
        build_profile({"a": np.ones(3), "b": np.ones(4)})
    with pytest.raises(ValueError, match="no columns"):
        build_profile({})
    with pytest.raises(ValueError, match="at least 1"):
        build_profile({"a": np.ones(3)}, bins=0)
    with pytest.raises(ValueError, match="at least 1"):
        build_profile({"a": np.ones(3)}, max_categories=0)
    with pytest.raises(ValueError, match="not in the data"):
        build_profile({"a": np.ones(3)}, categorical={"b"})


# --- categorical bins ------------------------------------------------------------------


def test_categories_by_frequency_with_the_rest_in_other() -> None:
    values = np.array(["b"] * 5 + ["a"] * 5 + ["c"] * 3 + ["d"] * 1 + [""] * 2)
    feature = build_profile({"c": values}, max_categories=3).feature("c")
    assert feature.kind == "categorical"
    assert feature.categories == ["a", "b", "c"]  # ties broken by name
    assert feature.counts == [5, 5, 3, 1]  # "d" in other, "" missing


def test_numeric_column_can_be_declared_categorical() -> None:
    built = build_profile({"k": np.array([1, 2, 2, 3])}, categorical={"k"})
    assert built.feature("k").categories == ["2", "1", "3"]
    assert built.feature("k").counts == [2, 1, 1, 0]


def test_text_columns_are_categorical_without_being_declared() -> None:
    assert build_profile({"s": np.array(["x", "y"])}).feature("s").kind == "categorical"


def test_categories_are_capped_at_fifty_by_default() -> None:
    values = np.array([f"v{i:03d}" for i in range(80)])
    feature = build_profile({"c": values}).feature("c")
    assert len(feature.categories) == 50
    assert feature.counts[-1] == 30


# --- binning new data ------------------------------------------------------------------


def test_counts_for_reproduces_the_reference_counts(rng: np.random.Generator) -> None:
    columns = {
        "n": np.where(rng.random(5000) < 0.05, np.nan, rng.gamma(2.0, size=5000)),
        "c": rng.choice(np.array(["x", "y", "z", ""]), size=5000),
        "k": rng.integers(0, 4, size=5000),
    }
    built = build_profile(columns, bins=7)
    np.testing.assert_array_equal(counts_for(built, columns), built.reference_counts())


def test_counts_for_uses_le_bins_and_other(rng: np.random.Generator) -> None:
    built = Profile(
        rows=0,
        features=[
            FeatureProfile(name="n", kind="numeric", edges=[0.0, 1.0], counts=[0, 0, 0]),
            FeatureProfile(name="c", kind="categorical", categories=["a"], counts=[0, 0]),
        ],
    )
    got = counts_for(
        built,
        {
            "n": np.array([-np.inf, 0.0, 0.5, 1.0, 1.5, np.inf, np.nan]),
            "c": np.array(["a", "b", "", "a"]),
        },
    )
    # Value x goes to the first bin whose upper edge is >= x, like Prometheus `le`.
    np.testing.assert_array_equal(got, [[2, 2, 2], [2, 1, 0]])


def test_counts_for_many_edges_matches_few_edges_path(rng: np.random.Generator) -> None:
    x = np.concatenate([rng.normal(size=20_000), [np.nan, np.inf, -np.inf]])
    many = build_profile({"x": x}, bins=300).feature("x")
    assert len(many.edges) > profile_module._COMPARISON_EDGES
    edges = np.asarray(many.edges)
    by_search = profile_module._numeric_counts(x, edges)
    by_comparison = np.diff(
        [0, *(np.count_nonzero(x <= e) for e in edges), np.count_nonzero(~np.isnan(x))]
    )
    np.testing.assert_array_equal(by_search, by_comparison)


def test_counts_for_needs_every_feature() -> None:
    built = build_profile({"a": np.ones(3), "b": np.ones(3)})
    with pytest.raises(ValueError, match=r"no column for profile features \['b'\]"):
        counts_for(built, {"a": np.ones(2)})
    with pytest.raises(ValueError, match="not numeric"):
        counts_for(built, {"a": np.ones(2), "b": np.array(["x", "y"])})


def test_assign_keeps_its_contract() -> None:
    numeric = FeatureProfile(name="n", kind="numeric", edges=[0.0, 1.0], counts=[0, 0, 0])
    assert numeric.assign(np.array([-1.0, 0.0, 0.5, 2.0, np.nan])).tolist() == [0, 0, 1, 2, -1]
    categorical = FeatureProfile(
        name="c", kind="categorical", categories=["a", "b"], counts=[0] * 3
    )
    assert categorical.assign(np.array(["b", "zzz", "a", "b"])).tolist() == [1, 2, 0, 1]


# --- arrays for the statistics ---------------------------------------------------------


def test_reference_counts_and_positions_are_padded_consistently() -> None:
    built = Profile(
        rows=10,
        features=[
            FeatureProfile(name="n", kind="numeric", edges=[0.0, 2.0, 6.0], counts=[1, 2, 3, 4]),
            FeatureProfile(name="c", kind="categorical", categories=["a"], counts=[7, 3]),
        ],
    )
    np.testing.assert_array_equal(built.reference_counts(), [[1, 2, 3, 4], [7, 3, 0, 0]])
    np.testing.assert_array_equal(built.positions(), [[0, 1, 4, 6], [0, 1, 1, 1]])
    assert built.select(["c"]).names == ["c"]
    with pytest.raises(ValueError, match=r"no features \['zz'\]; it has \['n', 'c'\]"):
        built.select(["zz"])


def test_profile_round_trips_through_json(tmp_path: Path, rng: np.random.Generator) -> None:
    built = build_profile(
        {"x": rng.normal(size=100) * 1e-7 + 1 / 3, "c": rng.choice(np.array(["u", "v"]), 100)}
    )
    save_profile(built, tmp_path / "p.json")
    assert load_profile(tmp_path / "p.json") == built


# --- reading tables --------------------------------------------------------------------


def write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def test_read_numeric_csv(tmp_path: Path) -> None:
    path = write(tmp_path / "d.csv", 'a,b\n1,2.5\n"3",nan\n-inf,1e3\n')
    table = read_table(path)
    assert list(table) == ["a", "b"]
    np.testing.assert_array_equal(table["a"], [1.0, 3.0, -np.inf])
    np.testing.assert_array_equal(table["b"], [2.5, np.nan, 1000.0])


def test_read_csv_with_empty_cells_and_text(tmp_path: Path) -> None:
    path = write(tmp_path / "d.csv", 'num,txt,code\n1,red,007\n,"blue, dark",8\n2.5,,9\n')
    table = read_table(path, categorical={"code"})
    np.testing.assert_array_equal(table["num"], [1.0, np.nan, 2.5])
    assert table["txt"].tolist() == ["red", "blue, dark", ""]
    assert table["code"].tolist() == ["007", "8", "9"]


def test_read_csv_column_that_turns_to_text_late(tmp_path: Path) -> None:
    rows = [f"{i},{i}" for i in range(profile_module._CSV_CHUNK_ROWS + 5)]
    rows[-1] = "1,oops"
    path = write(tmp_path / "d.csv", "a,b\n" + "\n".join(rows) + "\n")
    table = read_table(path)
    assert table["a"].dtype == np.float64
    assert table["b"].dtype.kind == "U"
    assert table["b"][0] == "0" and table["b"][-1] == "oops"


def test_read_csv_ignores_categorical_names_it_lacks(tmp_path: Path) -> None:
    table = read_table(write(tmp_path / "g.csv", "a\n1\n"), categorical={"zz"})
    assert list(table) == ["a"]


def test_read_header_only_csv(tmp_path: Path) -> None:
    table = read_table(write(tmp_path / "d.csv", "a,b\n"))
    assert {k: v.size for k, v in table.items()} == {"a": 0, "b": 0}


def test_read_csv_rejects_malformed_files(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="data row 2 has 1 cells, expected 2"):
        read_table(write(tmp_path / "d.csv", "a,b\n1,2\n3\n4,5\n"))
    with pytest.raises(ValueError, match="empty file"):
        read_table(write(tmp_path / "e.csv", ""))
    with pytest.raises(ValueError, match="unique"):
        read_table(write(tmp_path / "f.csv", "a,a\n1,2\n"))


@pytest.mark.skipif(
    importlib.util.find_spec("pandas") is not None, reason="pandas is installed here"
)
def test_parquet_without_pandas_says_what_to_install(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="needs pandas and pyarrow"):
        read_table(write(tmp_path / "d.parquet", "PAR1"))

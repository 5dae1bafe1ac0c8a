"""Which columns of a table suit which analysis: the checks templates share."""

from __future__ import annotations

from dataclasses import dataclass, field

import pandas as pd

BAD_CHARS = set("[]\n\r@")


def printable(value: object) -> bool:
    """A category value that survives the `@name[value]` answer format."""
    s = str(value)
    return 0 < len(s) <= 40 and not (set(s) & BAD_CHARS) and s == s.strip()


@dataclass
class Profile:
    """A table as read back from the CSV the kernel will read (so dtypes agree)."""

    df: pd.DataFrame
    file: str
    min_rows: int = 20
    max_levels: int = 12
    numeric: list[str] = field(default_factory=list)       # measurements: many distinct values
    categorical: list[str] = field(default_factory=list)   # 2..max_levels printable levels, >= 3 rows each
    binary: list[str] = field(default_factory=list)        # exactly two levels, >= 10 rows each
    with_missing: list[str] = field(default_factory=list)  # numeric with some (< 50%) missing

    def __post_init__(self) -> None:
        df, n = self.df, len(self.df)
        for c in df.columns:
            if not isinstance(c, str) or not printable(c):
                continue
            s = df[c]
            nonnull = s.dropna()
            if pd.api.types.is_bool_dtype(s) or pd.api.types.is_string_dtype(s) or pd.api.types.is_integer_dtype(s):
                counts = nonnull.value_counts()
                if 2 <= len(counts) <= self.max_levels and counts.min() >= 3 and all(printable(v) for v in counts.index):
                    self.categorical.append(c)
                    if len(counts) == 2 and counts.min() >= 10:
                        self.binary.append(c)
            if pd.api.types.is_numeric_dtype(s) and not pd.api.types.is_bool_dtype(s):
                if len(nonnull) >= self.min_rows and nonnull.nunique() >= 8 and not self._is_id(nonnull):
                    self.numeric.append(c)
                    if 0 < s.isna().sum() < 0.5 * n:
                        self.with_missing.append(c)

    @staticmethod
    def _is_id(s: pd.Series) -> bool:
        """A row number or identifier: integers, all distinct, in steps of one."""
        if not pd.api.types.is_integer_dtype(s) or s.nunique() != len(s):
            return False
        d = s.sort_values().diff().dropna()
        return bool(len(d)) and bool((d == 1).all())

    def pairs(self) -> list[tuple[str, str]]:
        """Numeric column pairs with enough complete rows and neither constant."""
        out = []
        for i, a in enumerate(self.numeric):
            for b in self.numeric[i + 1:]:
                both = self.df[[a, b]].dropna()
                if len(both) >= self.min_rows and both[a].std() > 0 and both[b].std() > 0:
                    out.append((a, b))
        return out

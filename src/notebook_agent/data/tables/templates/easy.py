"""Easy templates: one statistic of one or two columns."""

from __future__ import annotations

from ..sources import slug
from .base import TWO_DP, Template, printer, say


class ColumnStat(Template):
    name, level, concepts = "column_stat", "easy", ["Summary Statistics"]
    STATS = {"mean": ("mean", "mean()"), "median": ("median", "median()"),
             "std": ("sample standard deviation", "std()"), "max": ("maximum", "max()"),
             "min": ("minimum", "min()"), "var": ("sample variance", "var()")}

    def plan(self, p, rng):
        if not p.numeric:
            return None
        col = rng.choice(p.numeric)
        stat = rng.choice(list(self.STATS))
        word, call = self.STATS[stat]
        n = f"{stat}_{slug(col, 30)}"
        q = say(rng, f"What is the {word} of the '{col}' column?", f"Calculate the {word} of '{col}'.",
                f"Find the {word} of the values in column '{col}'.")
        c = "Ignore missing values. " + ("Use the sample statistic (ddof=1). " if stat in ("std", "var") else "") + \
            "Round the result to two decimal places."
        return self.make(p, q, c, [(n, TWO_DP)],
                         [(f"Compute the {word} of '{col}'", f"value = df[{col!r}].{call}\n" + printer((n, "value:.2f")))],
                         column=col, stat=stat)


class MissingCount(Template):
    name, level, concepts = "missing_count", "easy", ["Comprehensive Data Preprocessing"]

    def plan(self, p, rng):
        cols = [c for c in p.df.columns if isinstance(c, str) and c in p.numeric + p.categorical and p.df[c].isna().any()]
        if not cols:
            return None
        col = rng.choice(cols)
        n = f"missing_{slug(col, 30)}"
        q = say(rng, f"How many values are missing in the '{col}' column?",
                f"Count the missing (NaN) entries of column '{col}'.")
        return self.make(p, q, "Count empty cells, which pandas reads as NaN.", [(n, "an integer")],
                         [(f"Count the missing values of '{col}'", f"count = df[{col!r}].isna().sum()\n" + printer((n, "count")))],
                         column=col)


class DistinctCount(Template):
    name, level, concepts = "distinct_count", "easy", ["Summary Statistics"]

    def plan(self, p, rng):
        if not p.categorical:
            return None
        col = rng.choice(p.categorical)
        n = f"distinct_{slug(col, 30)}"
        q = say(rng, f"How many distinct values does the '{col}' column take?",
                f"Count the unique values of '{col}'.")
        return self.make(p, q, "Do not count missing values.", [(n, "an integer")],
                         [(f"Count the distinct values of '{col}'", f"count = df[{col!r}].nunique()\n" + printer((n, "count")))],
                         column=col)


class MostCommon(Template):
    name, level, concepts = "most_common", "easy", ["Summary Statistics"]

    def plan(self, p, rng):
        cols = [c for c in p.categorical if (vc := p.df[c].value_counts()).iloc[0] > vc.iloc[1]]
        if not cols:
            return None
        col = rng.choice(cols)
        s = slug(col, 30)
        q = say(rng, f"Which value of '{col}' occurs most often, and how many times?",
                f"Find the most frequent value in column '{col}' and its number of occurrences.")
        items = [(f"most_common_{s}", "the value as written in the table"), (f"count_{s}", "an integer")]
        code = (f"counts = df[{col!r}].value_counts()\nprint(counts.head())\n"
                + printer((items[0][0], "counts.index[0]"), (items[1][0], "counts.iloc[0]")))
        return self.make(p, q, "Ignore missing values.", items, [(f"Count each value of '{col}'", code)], column=col)


class Correlation(Template):
    name, level, concepts = "correlation", "easy", ["Correlation Analysis"]

    def plan(self, p, rng):
        pairs = p.pairs()
        if not pairs:
            return None
        a, b = rng.choice(pairs)
        n = f"corr_{slug(a, 20)}_{slug(b, 20)}"
        q = say(rng, f"What is the Pearson correlation coefficient between '{a}' and '{b}'?",
                f"Calculate the correlation between the columns '{a}' and '{b}'.")
        c = "Use the Pearson correlation on the rows where both values are present. Round to two decimal places."
        return self.make(p, q, c, [(n, "a number between -1 and 1 rounded to two decimal places")],
                         [(f"Correlate '{a}' with '{b}'", f"r = df[{a!r}].corr(df[{b!r}])\n" + printer((n, "r:.2f")))],
                         columns=[a, b])


class ThresholdCount(Template):
    name, level, concepts = "threshold_count", "easy", ["Summary Statistics"]

    def plan(self, p, rng):
        cols = list(p.numeric)
        rng.shuffle(cols)
        for col in cols:
            s = p.df[col].dropna()
            q = float(s.quantile(rng.choice([0.25, 0.5, 0.75])))
            t = float(f"{q:.2g}")
            if (s == t).any() or not (s > t).any() or (s > t).all():
                continue
            ts = int(t) if t == int(t) else t
            n = f"count_{slug(col, 30)}_above"
            qtext = say(rng, f"How many rows have '{col}' greater than {ts}?",
                        f"Count the records whose '{col}' value exceeds {ts}.")
            return self.make(p, qtext, "Rows with a missing value do not count.", [(n, "an integer")],
                             [(f"Count rows with '{col}' above {ts}", f"count = (df[{col!r}] > {ts!r}).sum()\n" + printer((n, "count")))],
                             column=col, threshold=ts)
        return None


class Skewness(Template):
    name, level, concepts = "skewness", "easy", ["Distribution Analysis"]

    def plan(self, p, rng):
        if not p.numeric:
            return None
        col = rng.choice(p.numeric)
        n = f"skew_{slug(col, 30)}"
        q = say(rng, f"What is the skewness of '{col}'?", f"Measure the skewness of the distribution of '{col}'.")
        c = "Use pandas' `skew()` (the adjusted Fisher-Pearson coefficient), ignoring missing values. Round to two decimal places."
        return self.make(p, q, c, [(n, TWO_DP)],
                         [(f"Compute the skewness of '{col}'", f"value = df[{col!r}].skew()\n" + printer((n, "value:.2f")))],
                         column=col)



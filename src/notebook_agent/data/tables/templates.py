"""The catalogue of analyses. A template looks at a table's profile, picks columns that suit
it (or declines), and writes a DABench-style task: question, constraints, `@name[value]`
format, and the solution as notebook cells whose last cell prints the answer items.

Answers are never computed here: the generator runs the cells in a real kernel and takes what
the last cell printed. The checks here only keep away questions whose answer would depend on a
choice the task does not state (ties for a maximum, values on a threshold, p-values next to
0.05, rounding to zero).

One extension point: `Template.plan`, called by the generator once per table.
"""

from __future__ import annotations

import abc
import random
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from .profile import Profile
from .sources import slug

Cell = tuple[str, str]  # (comment, code)

TWO_DP = "a number rounded to two decimal places"


@dataclass
class Plan:
    """A task before it is run: the generator fills in the answer from the kernel."""

    template: str
    level: str
    concepts: list[str]
    question: str
    constraints: str
    format: str
    names: list[str]
    cells: list[Cell]
    params: dict[str, Any] = field(default_factory=dict)


def load_cell(file: str) -> Cell:
    return ("Load the table and look at its size and first rows",
            f"import pandas as pd\n\ndf = pd.read_csv({file!r})\nprint(df.shape)\ndf.head()")


def fmt(items: list[tuple[str, str]]) -> str:
    """`@a[x], @b[y] where x is ..., y is ...`."""
    return ", ".join(f"@{n}[{n}_value]" for n, _ in items) + " where " + "; ".join(
        f"{n}_value is {what}" for n, what in items)


class Template(abc.ABC):
    name: str = ""
    level: str = "easy"
    concepts: list[str] = []

    @abc.abstractmethod
    def plan(self, p: Profile, rng: random.Random) -> Plan | None:
        """A task on this table, or None when the template does not apply to it."""

    def make(self, p: Profile, question: str, constraints: str, items: list[tuple[str, str]],
             cells: list[Cell], **params: Any) -> Plan:
        return Plan(self.name, self.level, list(self.concepts), question, constraints, fmt(items),
                    [n for n, _ in items], [load_cell(p.file), *cells], params)


def say(rng: random.Random, *phrasings: str) -> str:
    return rng.choice(phrasings)


def printer(*pairs: tuple[str, str]) -> str:
    """Code printing `@name[value]` items; each value is a Python expression already formatted."""
    return "\n".join(f'print(f"@{n}[{{{expr}}}]")' for n, expr in pairs)


def distinct_after_rounding(values: list[float], dp: int = 2) -> bool:
    """The top two values differ clearly (a maximum that rounding or noise cannot flip)."""
    top = sorted(values, reverse=True)[:2]
    return len(top) < 2 or (round(top[0], dp) != round(top[1], dp) and top[0] - top[1] > 1e-6 * max(1, abs(top[0])))


# ---- easy -------------------------------------------------------------------------------

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
        items = [(f"most_common_{s}", f"the value as written in the table"), (f"count_{s}", "an integer")]
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


# ---- medium -----------------------------------------------------------------------------

class GroupTop(Template):
    name, level, concepts = "group_top", "medium", ["Summary Statistics", "Feature Engineering"]

    def plan(self, p, rng):
        combos = [(g, v) for g in p.categorical for v in p.numeric if g != v]
        rng.shuffle(combos)
        for g, v in combos:
            means = p.df.groupby(g)[v].mean().dropna()
            if len(means) < 2 or not distinct_after_rounding(means.tolist()):
                continue
            sg, sv = slug(g, 20), slug(v, 20)
            q = say(rng, f"Which '{g}' group has the highest average '{v}', and what is that average?",
                    f"Group the rows by '{g}' and find the group with the largest mean of '{v}'. Report the group and its mean.")
            items = [(f"top_{sg}", "the group's value as written in the table"), (f"mean_{sv}", TWO_DP)]
            code = (f"means = df.groupby({g!r})[{v!r}].mean().sort_values(ascending=False)\nprint(means)\n"
                    + printer((items[0][0], "means.index[0]"), (items[1][0], "means.iloc[0]:.2f")))
            return self.make(p, q, "Ignore missing values. Round the mean to two decimal places.", items,
                             [(f"Average '{v}' per '{g}'", code)], columns=[g, v])
        return None


class IqrOutliers(Template):
    name, level, concepts = "iqr_outliers", "medium", ["Outlier Detection"]

    def plan(self, p, rng):
        cols = list(p.numeric)
        rng.shuffle(cols)
        for col in cols:
            s = p.df[col].dropna()
            q1, q3 = s.quantile(0.25), s.quantile(0.75)
            lo, hi = q1 - 1.5 * (q3 - q1), q3 + 1.5 * (q3 - q1)
            if q3 <= q1 or ((s == lo) | (s == hi)).any() or not ((s < lo) | (s > hi)).any():
                continue
            n = f"outliers_{slug(col, 30)}"
            q = say(rng, f"How many outliers does '{col}' have by the IQR rule?",
                    f"Detect outliers in '{col}' with the interquartile range method and count them.")
            c = ("An outlier lies below Q1 - 1.5*IQR or above Q3 + 1.5*IQR, with Q1 and Q3 the 25th and 75th "
                 "percentiles from pandas' `quantile` (linear interpolation). Ignore missing values.")
            code = (f"s = df[{col!r}].dropna()\nq1, q3 = s.quantile(0.25), s.quantile(0.75)\niqr = q3 - q1\n"
                    f"low, high = q1 - 1.5 * iqr, q3 + 1.5 * iqr\nprint(q1, q3, low, high)\n"
                    f"count = ((s < low) | (s > high)).sum()\n" + printer((n, "count")))
            return self.make(p, q, c, [(n, "an integer")], [(f"Find the IQR bounds of '{col}' and count outliers", code)],
                             column=col)
        return None


class ZscoreOutliers(Template):
    name, level, concepts = "zscore_outliers", "medium", ["Outlier Detection"]

    def plan(self, p, rng):
        cols = list(p.numeric)
        rng.shuffle(cols)
        for col in cols:
            s = p.df[col].dropna()
            z0 = ((s - s.mean()) / s.std(ddof=0)).abs()
            z1 = ((s - s.mean()) / s.std(ddof=1)).abs()
            k = int((z1 > 3).sum())
            if k == 0 or k != int((z0 > 3).sum()):  # the count must not depend on ddof
                continue
            n = f"z_outliers_{slug(col, 30)}"
            q = say(rng, f"How many values of '{col}' have an absolute z-score above 3?",
                    f"Using z-scores, count the outliers in '{col}' (|z| > 3).")
            code = (f"s = df[{col!r}].dropna()\nz = (s - s.mean()) / s.std()\ncount = (z.abs() > 3).sum()\n"
                    + printer((n, "count")))
            return self.make(p, q, "z = (x - mean) / standard deviation over the non-missing values.",
                             [(n, "an integer")], [(f"Compute z-scores of '{col}' and count |z| > 3", code)], column=col)
        return None


class Normality(Template):
    name, level, concepts = "normality", "medium", ["Distribution Analysis"]

    def plan(self, p, rng):
        from scipy import stats

        cols = list(p.numeric)
        rng.shuffle(cols)
        for col in cols:
            s = p.df[col].dropna()
            if not 20 <= len(s) <= 5000:
                continue
            pv = stats.shapiro(s).pvalue
            if 0.03 <= pv <= 0.07:
                continue
            sc = slug(col, 30)
            q = say(rng, f"Is '{col}' normally distributed according to the Shapiro-Wilk test?",
                    f"Test whether the values of '{col}' follow a normal distribution (Shapiro-Wilk).")
            c = ("Use scipy.stats.shapiro on the non-missing values with a significance level of 0.05: the data is "
                 "'normal' when the p-value is at least 0.05, else 'not normal'. Round the p-value to four decimal places.")
            items = [(f"p_value_{sc}", "a number rounded to four decimal places"), (f"normality_{sc}", "normal or not normal")]
            code = (f"from scipy import stats\n\ns = df[{col!r}].dropna()\nresult = stats.shapiro(s)\nprint(result)\n"
                    f"verdict = 'normal' if result.pvalue >= 0.05 else 'not normal'\n"
                    + printer((items[0][0], "result.pvalue:.4f"), (items[1][0], "verdict")))
            return self.make(p, q, c, items, [(f"Shapiro-Wilk test of '{col}'", code)], column=col)
        return None


class FillThenStats(Template):
    name, level, concepts = "fill_then_stats", "medium", ["Comprehensive Data Preprocessing", "Summary Statistics"]

    def plan(self, p, rng):
        if not p.with_missing:
            return None
        col = rng.choice(p.with_missing)
        how = rng.choice(["median", "mean"])
        sc = slug(col, 30)
        q = say(rng, f"Fill the missing values of '{col}' with the column's {how}. What are its mean and standard deviation then?",
                f"After replacing missing entries in '{col}' by the {how} of the column, report the column's mean and standard deviation.")
        items = [(f"mean_{sc}", TWO_DP), (f"std_{sc}", TWO_DP)]
        code = (f"filled = df[{col!r}].fillna(df[{col!r}].{how}())\nprint(df[{col!r}].isna().sum(), 'filled')\n"
                + printer((items[0][0], "filled.mean():.2f"), (items[1][0], "filled.std():.2f")))
        return self.make(p, q, "The standard deviation is the sample one (ddof=1). Round to two decimal places.",
                         items, [(f"Fill '{col}' with its {how} and summarise it", code)], column=col, how=how)


class CorrelationStrength(Template):
    name, level, concepts = "correlation_strength", "medium", ["Correlation Analysis"]

    def plan(self, p, rng):
        pairs = p.pairs()
        rng.shuffle(pairs)
        for a, b in pairs:
            r = p.df[a].corr(p.df[b])
            if 0.45 <= abs(r) <= 0.55:
                continue
            n = f"{slug(a, 20)}_{slug(b, 20)}"
            q = say(rng, f"How strongly are '{a}' and '{b}' related? Give the Pearson correlation and the kind of relationship.",
                    f"Compute the Pearson correlation between '{a}' and '{b}' and classify the relationship.")
            c = ("The relationship is 'positive' when r >= 0.5, 'negative' when r <= -0.5, and 'none' otherwise. "
                 "Use rows where both values are present; round r to two decimal places.")
            items = [(f"r_{n}", "a number rounded to two decimal places"), (f"relationship_{n}", "positive, negative or none")]
            code = (f"r = df[{a!r}].corr(df[{b!r}])\nkind = 'positive' if r >= 0.5 else 'negative' if r <= -0.5 else 'none'\n"
                    + printer((items[0][0], "r:.2f"), (items[1][0], "kind")))
            return self.make(p, q, c, items, [(f"Correlate '{a}' and '{b}' and classify", code)], columns=[a, b])
        return None


class LinearTrend(Template):
    name, level, concepts = "linear_trend", "medium", ["Correlation Analysis", "Machine Learning"]

    def plan(self, p, rng):
        pairs = p.pairs()
        rng.shuffle(pairs)
        for x, y in pairs:
            if rng.random() < 0.5:
                x, y = y, x
            both = p.df[[x, y]].dropna()
            slope, icept = np.polyfit(both[x], both[y], 1)
            if abs(slope) < 0.05 or abs(slope) > 1e5 or abs(icept) > 1e6:
                continue
            q = say(rng, f"Fit a straight line predicting '{y}' from '{x}'. What are its slope and intercept?",
                    f"Using least squares, regress '{y}' on '{x}' and report the slope and intercept.")
            items = [("slope", TWO_DP), ("intercept", TWO_DP)]
            code = (f"import numpy as np\n\nboth = df[[{x!r}, {y!r}]].dropna()\n"
                    f"slope, intercept = np.polyfit(both[{x!r}], both[{y!r}], 1)\n"
                    + printer(("slope", "slope:.2f"), ("intercept", "intercept:.2f")))
            return self.make(p, q, "Use ordinary least squares on rows where both values are present. Round to two decimal places.",
                             items, [(f"Fit '{y}' = slope * '{x}' + intercept", code)], columns=[x, y])
        return None


class BinCounts(Template):
    name, level, concepts = "bin_counts", "medium", ["Feature Engineering", "Distribution Analysis"]

    def plan(self, p, rng):
        if not p.numeric:
            return None
        col = rng.choice(p.numeric)
        sc = slug(col, 30)
        q = say(rng, f"Split '{col}' into three equal-width bins. How many rows fall in each bin?",
                f"Bin the column '{col}' into 3 intervals of equal width and count the rows per bin.")
        items = [(f"{sc}_bin{i}", "an integer") for i in (1, 2, 3)]
        code = (f"bins = pd.cut(df[{col!r}], bins=3)\ncounts = bins.value_counts(sort=False)\nprint(counts)\n"
                + printer(*[(items[i][0], f"counts.iloc[{i}]") for i in range(3)]))
        return self.make(p, q, "Use pandas' `cut` with bins=3; bin1 holds the lowest values. Missing values are not counted.",
                         items, [(f"Cut '{col}' into three bins and count", code)], column=col)


# ---- hard -------------------------------------------------------------------------------

class FilterGroupRank(Template):
    name, level, concepts = "filter_group_rank", "hard", ["Comprehensive Data Preprocessing", "Summary Statistics"]

    def plan(self, p, rng):
        combos = [(f, g, v) for f in p.numeric for g in p.categorical for v in p.numeric if len({f, g, v}) == 3]
        rng.shuffle(combos)
        for f, g, v in combos[:50]:
            med = float(f"{p.df[f].median():.3g}")
            kept = p.df[p.df[f] > med]
            means = kept.groupby(g)[v].mean().dropna()
            if (p.df[f] == med).any() or len(kept) < 10 or len(means) < 2 or not distinct_after_rounding(means.tolist()):
                continue
            medtxt = int(med) if med == int(med) else med
            sg, sv = slug(g, 20), slug(v, 20)
            q = say(rng, f"Keep the rows where '{f}' is greater than {medtxt}. Among them, which '{g}' has the highest mean '{v}'? "
                         f"Report the number of rows kept, that group and its mean.",
                    f"Filter the table to '{f}' > {medtxt}, then group by '{g}' and rank the groups by average '{v}'. "
                    f"How many rows pass the filter, and which group ranks first with what mean?")
            items = [("rows_kept", "an integer"), (f"top_{sg}", "the group's value as written in the table"),
                     (f"mean_{sv}", TWO_DP)]
            cells = [(f"Keep rows with '{f}' above {medtxt}", f"kept = df[df[{f!r}] > {medtxt!r}]\nprint(len(kept))"),
                     (f"Rank '{g}' groups by mean '{v}'",
                      f"means = kept.groupby({g!r})[{v!r}].mean().sort_values(ascending=False)\nprint(means)\n"
                      + printer(("rows_kept", "len(kept)"), (items[1][0], "means.index[0]"), (items[2][0], "means.iloc[0]:.2f")))]
            return self.make(p, q, "Ignore missing values in the mean. Round the mean to two decimal places.", items, cells,
                             columns=[f, g, v], threshold=medtxt)
        return None


class RatioFeature(Template):
    name, level, concepts = "ratio_feature", "hard", ["Feature Engineering", "Summary Statistics"]

    def plan(self, p, rng):
        cands = [(a, b) for a in p.numeric for b in p.numeric if a != b and (p.df[b].dropna() > 0).all()
                 and (p.df[a].dropna() >= 0).all()]
        rng.shuffle(cands)
        for a, b in cands:
            ratio = (p.df[a] / p.df[b]).dropna()
            if len(ratio) < 20 or not 0.01 <= ratio.mean() <= 1e4:
                continue
            name = f"{slug(a, 15)}_per_{slug(b, 15)}"
            q = say(rng, f"Create a feature '{name}' as '{a}' divided by '{b}'. What are its mean and median?",
                    f"Engineer a new column, the ratio of '{a}' to '{b}', and report the mean and median of that ratio.")
            items = [(f"mean_{name}", TWO_DP), (f"median_{name}", TWO_DP)]
            cells = [(f"Add the ratio of '{a}' to '{b}'", f"df[{name!r}] = df[{a!r}] / df[{b!r}]\ndf[{name!r}].describe()"),
                     ("Summarise the new feature", printer((items[0][0], f"df[{name!r}].mean():.2f"),
                                                           (items[1][0], f"df[{name!r}].median():.2f")))]
            return self.make(p, q, "Rows where either value is missing have no ratio and are ignored. Round to two decimal places.",
                             items, cells, columns=[a, b])
        return None


class LinearModel(Template):
    name, level, concepts = "linear_model", "hard", ["Machine Learning", "Correlation Analysis"]

    def plan(self, p, rng):
        if len(p.numeric) < 3:
            return None
        y = rng.choice(p.numeric)
        xs = rng.sample([c for c in p.numeric if c != y], 2)
        if len(p.df[[y, *xs]].dropna()) < 50:
            return None
        q = say(rng, f"Train a linear regression predicting '{y}' from '{xs[0]}' and '{xs[1]}'. How well does it do on held-out rows?",
                f"Fit a linear regression model of '{y}' on '{xs[0]}' and '{xs[1]}' and evaluate it on a test split.")
        c = ("Drop rows with a missing value in these columns; split with sklearn's train_test_split(test_size=0.2, "
             "random_state=42); fit LinearRegression on the training part; report the R-squared and the root mean "
             "squared error on the test part, rounded to two decimal places.")
        items = [("r2", TWO_DP), ("rmse", TWO_DP)]
        cells = [("Prepare features and target, and split",
                  f"from sklearn.model_selection import train_test_split\n\ndata = df[[{xs[0]!r}, {xs[1]!r}, {y!r}]].dropna()\n"
                  f"X, y = data[[{xs[0]!r}, {xs[1]!r}]], data[{y!r}]\n"
                  "X_train, X_test, y_train, y_test = train_test_split(X, y, test_size=0.2, random_state=42)\n"
                  "print(len(X_train), len(X_test))"),
                 ("Fit the regression and score it on the test rows",
                  "from sklearn.linear_model import LinearRegression\nfrom sklearn.metrics import mean_squared_error, r2_score\n\n"
                  "model = LinearRegression().fit(X_train, y_train)\npred = model.predict(X_test)\n"
                  "rmse = mean_squared_error(y_test, pred) ** 0.5\n" + printer(("r2", "r2_score(y_test, pred):.2f"), ("rmse", "rmse:.2f")))]
        return self.make(p, q, c, items, cells, columns=[y, *xs])


class Classifier(Template):
    name, level, concepts = "classifier", "hard", ["Machine Learning"]

    def plan(self, p, rng):
        if not p.binary or len(p.numeric) < 2:
            return None
        t = rng.choice(p.binary)
        xs = rng.sample([c for c in p.numeric if c != t], min(2, len([c for c in p.numeric if c != t])))
        if len(xs) < 2 or len(p.df[[t, *xs]].dropna()) < 60:
            return None
        q = say(rng, f"Train a logistic regression classifier predicting '{t}' from '{xs[0]}' and '{xs[1]}'. What is its test accuracy?",
                f"Build a logistic regression model for '{t}' using '{xs[0]}' and '{xs[1]}' as features and report its accuracy on a test split.")
        c = ("Drop rows with a missing value in these columns; split with sklearn's train_test_split(test_size=0.3, "
             "random_state=42); use LogisticRegression(max_iter=1000) with default settings otherwise; report the "
             "accuracy on the test part rounded to two decimal places.")
        cells = [("Prepare features, target and the split",
                  f"from sklearn.model_selection import train_test_split\n\ndata = df[[{xs[0]!r}, {xs[1]!r}, {t!r}]].dropna()\n"
                  f"X, y = data[[{xs[0]!r}, {xs[1]!r}]], data[{t!r}].astype(str)\n"
                  "X_train, X_test, y_train, y_test = train_test_split(X, y, test_size=0.3, random_state=42)\n"
                  "print(y.value_counts())"),
                 ("Fit the classifier and measure test accuracy",
                  "from sklearn.linear_model import LogisticRegression\n\n"
                  "clf = LogisticRegression(max_iter=1000).fit(X_train, y_train)\naccuracy = clf.score(X_test, y_test)\n"
                  + printer(("accuracy", "accuracy:.2f")))]
        return self.make(p, q, c, [("accuracy", "a number between 0 and 1 rounded to two decimal places")], cells,
                         columns=[t, *xs])


class CorrelationTest(Template):
    name, level, concepts = "correlation_test", "hard", ["Correlation Analysis", "Summary Statistics"]

    def plan(self, p, rng):
        from scipy import stats

        pairs = p.pairs()
        rng.shuffle(pairs)
        for a, b in pairs:
            both = p.df[[a, b]].dropna()
            r, pv = stats.pearsonr(both[a], both[b])
            if 0.03 <= pv <= 0.07:
                continue
            q = say(rng, f"Is the correlation between '{a}' and '{b}' statistically significant?",
                    f"Test the Pearson correlation of '{a}' and '{b}' for significance.")
            c = ("Use scipy.stats.pearsonr on rows where both values are present, significance level 0.05. "
                 "Report r rounded to two decimal places, the p-value rounded to four, and 'significant' or 'not significant'.")
            items = [("r", "a number rounded to two decimal places"), ("p_value", "a number rounded to four decimal places"),
                     ("significance", "significant or not significant")]
            code = (f"from scipy import stats\n\nboth = df[[{a!r}, {b!r}]].dropna()\nr, p = stats.pearsonr(both[{a!r}], both[{b!r}])\n"
                    "verdict = 'significant' if p < 0.05 else 'not significant'\n"
                    + printer(("r", "r:.2f"), ("p_value", "p:.4f"), ("significance", "verdict")))
            return self.make(p, q, c, items, [(f"Pearson test of '{a}' and '{b}'", code)], columns=[a, b])
        return None


TEMPLATES: list[Template] = [
    ColumnStat(), MissingCount(), DistinctCount(), MostCommon(), Correlation(), ThresholdCount(), Skewness(),
    GroupTop(), IqrOutliers(), ZscoreOutliers(), Normality(), FillThenStats(), CorrelationStrength(), LinearTrend(),
    BinCounts(), FilterGroupRank(), RatioFeature(), LinearModel(), Classifier(), CorrelationTest(),
]

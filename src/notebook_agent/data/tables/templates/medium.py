"""Medium templates: a method with a stated convention (groups, outliers, tests, fits, bins)."""

from __future__ import annotations

import numpy as np

from ..sources import slug
from .base import TWO_DP, Template, distinct_after_rounding, printer, say


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



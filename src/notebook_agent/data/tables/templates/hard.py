"""Hard templates: several steps (filter, group, rank), engineered features, models with a fixed split."""

from __future__ import annotations

from ..sources import slug
from .base import TWO_DP, Template, distinct_after_rounding, printer, say


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
            _, pv = stats.pearsonr(both[a], both[b])
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



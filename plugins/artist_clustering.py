"""Clusters of artists or tracks by their streaming profile: k-means on the DistroKid statement."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from bedrot_lab import Param, experiment, hookimpl
from bedrot_lab.analysis.tracks import canonical_spellings

if TYPE_CHECKING:
    import numpy as np
    import pandas as pd
    from sklearn.pipeline import Pipeline

__version__ = "1.0.0"

#: the statement is summed per these columns: the features are sums and distinct counts of them
STATEMENT_KEYS = ["Artist", "Title", "Store", "Sale Month"]
TIKTOK_COLUMNS = ["artist", "Video Views", "Likes", "Comments", "Shares"]
#: months on each side of the growth comparison: the latest ones against the ones before
GROWTH_MONTHS = 3
#: long-tailed sums that are clustered on log(1 + x) when ``log_scale`` is on
LOG_FEATURES = ("streams", "earnings_usd")
#: packages the logged pipeline needs (MLflow stores scikit-learn models with skops); listing them
#: spares MLflow its requirement inference, which starts a subprocess and takes seconds per model
MODEL_PACKAGES = ("scikit-learn", "numpy", "scipy", "skops")


@dataclass
class Fit:
    """One k-means fit: the pipeline, each point's cluster, and its quality (None when undefined)."""

    k: int
    pipeline: Pipeline
    labels: np.ndarray
    inertia: float
    silhouette: float | None
    silhouette_reason: str = ""


def account_key(names: pd.Series) -> pd.Series:
    """A name as TikTok handles spell it: lower case, letters and digits only (NOVA VANTA -> novavanta)."""
    return names.astype(str).str.lower().str.replace(r"[^a-z0-9]", "", regex=True)


def build_points(statement: pd.DataFrame, grain: str) -> pd.DataFrame:
    """One row per artist (``grain="artist"``) or per artist and track (``"track"``) with its features,
    from the statement's rows or their sums per artist, title, store and sale month.

    streams and earnings_usd are sums over the whole statement; earnings_per_stream is
    their ratio (undefined without streams); stores and months_active count distinct
    stores and sale months; growth is ln((streams of the latest 3 sale months + 1) /
    (streams of the 3 months before + 1)), the latest month being the statement's, so
    a track released in the last months has a large growth rather than an undefined one.
    """
    import numpy as np

    keys = ["Artist"] if grain == "artist" else ["Artist", "Title"]
    month = statement["Sale Month"].dt.year * 12 + statement["Sale Month"].dt.month
    latest = month.max()
    recent = month > latest - GROWTH_MONTHS
    before = (month > latest - 2 * GROWTH_MONTHS) & ~recent
    frame = statement.assign(month=month, recent=statement["Quantity"].where(recent, 0),
                             before=statement["Quantity"].where(before, 0))
    grouped = frame.groupby(keys, sort=True)
    points = grouped.agg(streams=("Quantity", "sum"), earnings_usd=("Earnings (USD)", "sum"),
                         stores=("Store", "nunique"), months_active=("month", "nunique"),
                         recent_streams=("recent", "sum"), previous_streams=("before", "sum"))
    if grain == "artist":
        points["tracks"] = grouped["Title"].nunique()
    points["earnings_per_stream"] = points["earnings_usd"] / points["streams"].where(points["streams"] > 0)
    points["growth"] = np.log((points["recent_streams"] + 1) / (points["previous_streams"] + 1))
    return points.reset_index()


def feature_columns(grain: str) -> list[str]:
    """The features clustered on, before any log scaling."""
    base = ["streams", "earnings_usd", "earnings_per_stream", "stores", "months_active", "growth"]
    return [*base[:3], "tracks", *base[3:]] if grain == "artist" else base


def model_matrix(points: pd.DataFrame, features: list[str], log_scale: bool) -> pd.DataFrame:
    """The pipeline's input: the features as floats, long-tailed sums as log(1 + x) when asked."""
    import numpy as np

    matrix = points[features].astype("float64")
    if log_scale:
        for column in LOG_FEATURES:
            matrix[column] = np.log1p(matrix[column].clip(lower=0))
        matrix = matrix.rename(columns={c: f"log_{c}" for c in LOG_FEATURES})
    return matrix


def fit_kmeans(matrix: pd.DataFrame, k: int, seed: int) -> Fit:
    """StandardScaler + KMeans on ``matrix``; silhouette in the scaled space the clusters live in."""
    from sklearn.cluster import KMeans
    from sklearn.metrics import silhouette_score
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import StandardScaler

    pipeline = Pipeline([("scale", StandardScaler()), ("kmeans", KMeans(n_clusters=k, n_init=10, random_state=seed))])
    labels = pipeline.fit_predict(matrix)
    found = len(set(labels.tolist()))
    silhouette, reason = None, ""
    if len(matrix) < 3 or k >= len(matrix):
        reason = f"silhouette needs at least 3 points and k < points; k={k}, points={len(matrix)}"
    elif found < 2:
        reason = f"k-means put all {len(matrix)} points in one cluster"
    else:
        silhouette = float(silhouette_score(pipeline[:-1].transform(matrix), labels))
    return Fit(k, pipeline, labels, float(pipeline[-1].inertia_), silhouette, reason)


def distinct_points(matrix: pd.DataFrame) -> int:
    import numpy as np

    return len(np.unique(matrix.to_numpy(), axis=0)) if len(matrix) else 0


@experiment(
    "artist-clustering",
    datasets=["dk_bank_details", "tiktok_analytics"],
    params={
        "grain": Param(str, "track", "cluster tracks (artist x title) or whole artists", choices=("track", "artist")),
        "n_clusters": Param(int, 3, "k of k-means (not used when sweep_k is on)", min=2),
        "random_state": Param(int, 42, "seed of the k-means initialisation"),
        "sweep_k": Param(bool, False, "fit k = 2..max_k in child runs and keep the k with the best silhouette"),
        "max_k": Param(int, 9, "largest k that sweep_k tries (capped at points - 1)", min=2),
        "log_scale": Param(bool, True, "cluster on log(1 + x) of streams and earnings, which are long-tailed"),
        "tiktok": Param(bool, False, "add each artist's TikTok engagement rate, if every artist has an account"),
    },
    requires={"sklearn": "bedrot-lab[analyses]"},
    headline=["silhouette_score", "inertia_score", "points"],
)
def artist_clustering(ctx):
    """Groups of tracks (or artists) with a similar streaming profile, by k-means.

    Features per point from the DistroKid statement: streams, earnings, earnings per
    stream, stores, months with sales, growth of the latest 3 sale months against the
    3 before (and, per artist, the number of tracks). Optionally the artist's TikTok
    engagement rate, (likes + comments + shares) / views over the whole TikTok file,
    joined where the artist's name without spaces and case is the TikTok handle; it
    is used only if every artist matches. Standardised, then k-means. With sweep_k,
    one child run per k with its inertia and silhouette; the parent keeps the best k.
    An artist or track spelled several ways (case, spacing) is one point, under its
    most common spelling. The statement is summed per artist, title, store and sale
    month in DuckDB, never loaded whole.
    """
    import numpy as np

    params = ctx.params
    statement = ctx.aggregate("dk_bank_details", by=STATEMENT_KEYS, sums=["Quantity", "Earnings (USD)"], rows="rows")
    statement = canonical_spellings(statement, rows="rows")
    points = build_points(statement, params["grain"])
    features = feature_columns(params["grain"])
    notes = []
    if params["tiktok"]:
        rates, note = tiktok_engagement(ctx, points)
        notes.append(note)
        if rates is not None:
            points["tiktok_engagement_rate"] = rates
            features.append("tiktok_engagement_rate")

    usable = np.isfinite(points[features].to_numpy(dtype=float)).all(axis=1)
    dropped = points.loc[~usable]
    points = points.loc[usable].reset_index(drop=True)
    if len(dropped):
        notes.append(f"{len(dropped)} point(s) left out for an undefined feature (no streams): "
                     + ", ".join(_labels(dropped)[:10]) + ".")
    matrix = model_matrix(points, features, params["log_scale"])
    distinct = distinct_points(matrix)
    ctx.log_metrics({"points": len(points), "points_dropped": len(dropped), "features": matrix.shape[1]})

    figures: dict[str, str] = {}  # artifact name -> title, for the report
    if params["sweep_k"]:
        fit = sweep(ctx, matrix, distinct, notes, figures)
    elif params["n_clusters"] > distinct:
        reason = (f"k={params['n_clusters']} needs at least {params['n_clusters']} distinct points; "
                  f"the statement gives {distinct} at grain={params['grain']}")
        fit = None
        for name in ("inertia_score", "silhouette_score", "cluster_size"):
            ctx.skip_metric(name, reason)
        notes.append(f"No clusters: {reason}.")
    else:
        fit = fit_kmeans(matrix, params["n_clusters"], params["random_state"])
    if fit is not None:
        log_fit(ctx, fit, points, matrix, figures)
    else:
        ctx.log_table(points, "points")
    ctx.report(report(params, points, features, matrix, fit, notes, figures))


def tiktok_engagement(ctx, points: pd.DataFrame) -> tuple[pd.Series | None, str]:
    """Each point's artist's TikTok engagement rate, or None and why not."""
    from bedrot_lab import DatasetError

    try:
        ctx.lab.dataset("tiktok_analytics").locate(ctx.settings)
    except DatasetError as exc:
        ctx.skip_metric("tiktok_matched_artists", f"no TikTok data: {exc}")
        return None, f"TikTok engagement not used: {exc}."
    tiktok = ctx.load("tiktok_analytics", columns=TIKTOK_COLUMNS)
    sums = tiktok.assign(account=account_key(tiktok["artist"])).groupby("account")[TIKTOK_COLUMNS[1:]].sum()
    rate = (sums["Likes"] + sums["Comments"] + sums["Shares"]) / sums["Video Views"].where(sums["Video Views"] > 0)
    artists = points["Artist"].drop_duplicates()
    matched = account_key(artists).map(rate)
    ctx.log_metric("tiktok_matched_artists", int(matched.notna().sum()))
    if matched.isna().any():
        missing = ", ".join(artists[matched.isna().to_numpy()].astype(str))
        return None, f"TikTok engagement not used: no TikTok account (with views) matches {missing}."
    return account_key(points["Artist"]).map(rate), (
        f"TikTok engagement rate joined for all {len(artists)} artists (handle = name in lower case without spaces).")


def sweep(ctx, matrix: pd.DataFrame, distinct: int, notes: list[str], figures: dict[str, str]) -> Fit | None:
    """One child run per k (inertia, silhouette); logs the curves (adding them to ``figures``)
    and returns the best fit."""
    import mlflow
    import pandas as pd

    params = ctx.params
    top = min(params["max_k"], len(matrix) - 1, distinct)
    if top < 2:
        reason = f"a sweep of k needs at least 3 distinct points; the statement gives {distinct}"
        for name in ("best_k", "inertia_score", "silhouette_score", "cluster_size"):
            ctx.skip_metric(name, reason)
        notes.append(f"No sweep: {reason}.")
        return None
    parent = mlflow.active_run()
    tags = {"bedrot.experiment": ctx.experiment.name, "bedrot.sweep.child": "true",
            "bedrot.plugin": ctx.experiment.plugin, "bedrot.plugin_version": __version__}
    fits, rows = [], []
    for k in range(2, top + 1):
        fit = fit_kmeans(matrix, k, params["random_state"])
        with mlflow.start_run(experiment_id=parent.info.experiment_id, run_name=f"k={k}", nested=True,
                              tags=tags, log_system_metrics=False) as child:
            mlflow.log_params({"k": k, "grain": params["grain"], "random_state": params["random_state"]})
            metrics = {"inertia_score": fit.inertia}
            if fit.silhouette is not None:
                metrics["silhouette_score"] = fit.silhouette
            else:
                mlflow.set_tag("skipped.silhouette_score", fit.silhouette_reason)
            mlflow.log_metrics(metrics)
        fits.append(fit)
        rows.append({"k": k, "inertia": fit.inertia, "silhouette": fit.silhouette, "run_id": child.info.run_id})
    table = pd.DataFrame(rows).astype({"silhouette": "float64"})
    scored = [f for f in fits if f.silhouette is not None]
    if not scored:
        ctx.skip_metric("best_k", "no k gave a silhouette")
        notes.append("No k gave a silhouette; the model shown is k=2.")
        best = fits[0]
    else:
        best = max(scored, key=lambda f: f.silhouette)
        ctx.log_metrics({"best_k": best.k, "best_silhouette_score": best.silhouette})
        mlflow.set_tag("best_k", str(best.k))
    ctx.log_table(table, "k_sweep")
    ctx.log_figure(sweep_figure(table, best.k), "k_sweep")
    figures["k_sweep"] = "Inertia and silhouette by k"
    if top < params["max_k"]:
        notes.append(f"k capped at {top} (points - 1, or distinct points) instead of max_k={params['max_k']}.")
    return best


def log_fit(ctx, fit: Fit, points: pd.DataFrame, matrix: pd.DataFrame, figures: dict[str, str]) -> None:
    """Metrics, points and clusters tables, scatter figure (added to ``figures``) and the model of one fit."""
    import numpy as np

    sizes = np.bincount(fit.labels, minlength=fit.k)
    metrics = {"inertia_score": fit.inertia, **{f"cluster_size.{i}": int(n) for i, n in enumerate(sizes)}}
    if fit.silhouette is not None:
        metrics["silhouette_score"] = fit.silhouette
    elif "silhouette_score" not in ctx.skipped:
        ctx.skip_metric("silhouette_score", fit.silhouette_reason)
    ctx.log_metrics(metrics)
    coords = projection(fit, matrix)
    table = points.assign(cluster=fit.labels)
    if coords is not None:
        table = table.assign(pc1=coords[0][:, 0], pc2=coords[0][:, 1])
    ctx.log_table(table, "points")
    ctx.log_table(profiles(table), "clusters")
    if coords is not None:
        ctx.log_figure(scatter_figure(table, fit, coords[1], coords[2], coords[3]), "clusters")
        figures["clusters"] = "Points on the first two principal components, by cluster"
    log_model(fit, matrix)


def profiles(table: pd.DataFrame) -> pd.DataFrame:
    """Per cluster: its size and the median of each feature."""
    numeric = table.drop(columns=["pc1", "pc2"], errors="ignore").select_dtypes("number")
    sizes = table.groupby("cluster").size().rename("size")
    return numeric.groupby("cluster").median().add_prefix("median_").join(sizes).reset_index()


def projection(fit: Fit, matrix: pd.DataFrame) -> tuple[Any, Any, Any, Any] | None:
    """Points and centres on the first two principal components of the scaled features,
    with the share of variance each explains and the axis names; None with fewer than 2 points."""
    import numpy as np
    from sklearn.decomposition import PCA

    if len(matrix) < 2 or matrix.shape[1] < 2:
        return None
    scaled = fit.pipeline[:-1].transform(matrix)
    pca = PCA(n_components=2).fit(scaled)
    ratios = pca.explained_variance_ratio_
    names = [f"PC{i + 1} ({share:.0%} of variance)" for i, share in enumerate(np.nan_to_num(ratios))]
    return pca.transform(scaled), pca.transform(fit.pipeline[-1].cluster_centers_), ratios, names


#: points named on the scatter chart: the most streamed, so that labels stay few and legible
LABELLED_POINTS = 5


def scatter_figure(table: pd.DataFrame, fit: Fit, centres: Any, ratios: Any, names: list[str]) -> Any:
    """The points on the first two principal components, coloured by cluster, shaped by artist
    (up to 10 artists), the centres marked and the most streamed points named."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axis = plt.subplots(figsize=(7, 5.5), layout="constrained")
    colors = plt.get_cmap("tab10")
    artists = table["Artist"].drop_duplicates()
    markers = dict(zip(artists, "o^sDvP*<>h")) if len(artists) <= 10 else {}
    axis.scatter(centres[:, 0], centres[:, 1], marker="X", s=220, facecolor="none", edgecolor="black",
                 linewidth=1.2, label="cluster centre", zorder=1)
    for cluster in range(fit.k):
        members = table[table["cluster"] == cluster]
        axis.scatter([], [], color=colors(cluster % 10), label=f"cluster {cluster} ({len(members)} points)")
        for marker, group in members.groupby(members["Artist"].map(markers).fillna("o"), sort=False):
            axis.scatter(group["pc1"], group["pc2"], s=60, color=colors(cluster % 10), marker=marker,
                         edgecolor="white", linewidth=0.5, zorder=2)
    for artist, marker in markers.items():
        axis.scatter([], [], color="grey", marker=marker, label=str(artist))
    named = table.nlargest(LABELLED_POINTS, "streams")
    titles = named["Title"].astype(str).str.split(" (feat.", regex=False).str[0].str.title() \
        if "Title" in named else named["Artist"].astype(str)
    for rank, (label, x, y) in enumerate(zip(titles, named["pc1"], named["pc2"])):
        axis.annotate(label[:24], (x, y), fontsize=8, xytext=(5, 6 - 12 * (rank % 2)), textcoords="offset points",
                      bbox={"boxstyle": "round,pad=0.15", "facecolor": "white", "edgecolor": "none", "alpha": 0.7})
    axis.set_xlabel(names[0])
    axis.set_ylabel(names[1])
    axis.set_title(f"k-means, k={fit.k}: points on the first two principal components\n"
                   f"(the {len(named)} most streamed named)", fontsize=10)
    figure.legend(fontsize=8, loc="outside lower center", ncol=3)
    return figure


def sweep_figure(table: pd.DataFrame, best_k: int) -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, left = plt.subplots(figsize=(7, 4), layout="constrained")
    right = left.twinx()
    left.plot(table["k"], table["inertia"], marker="o", color="#1f77b4", label="inertia")
    right.plot(table["k"], table["silhouette"], marker="s", color="#d62728", label="silhouette")
    left.axvline(best_k, color="grey", linestyle="--", linewidth=1)
    left.set_xlabel("k (clusters)")
    left.set_ylabel("inertia (within-cluster sum of squares)", color="#1f77b4")
    right.set_ylabel("silhouette", color="#d62728")
    left.set_xticks(table["k"])
    left.set_title(f"Choosing k: best silhouette at k={best_k}")
    lines = left.get_lines()[:1] + right.get_lines()
    left.legend(lines, [line.get_label() for line in lines], loc="upper center")
    return figure


def log_model(fit: Fit, matrix: pd.DataFrame) -> None:
    """The fitted pipeline as the run's MLflow model ``model``, with its signature."""
    from importlib.metadata import PackageNotFoundError, version

    import mlflow
    import mlflow.sklearn
    from mlflow.models import ModelSignature
    from mlflow.types.schema import ColSpec, Schema

    requirements = []
    for package in MODEL_PACKAGES:
        try:
            requirements.append(f"{package}=={version(package)}")
        except PackageNotFoundError:
            pass
    signature = ModelSignature(inputs=Schema([ColSpec("double", c) for c in matrix.columns]),
                               outputs=Schema([ColSpec("integer", "cluster")]))
    info = mlflow.sklearn.log_model(fit.pipeline, name="model", signature=signature, pip_requirements=requirements)
    mlflow.set_tag("model_uri", info.model_uri)


def _labels(points: pd.DataFrame) -> list[str]:
    if "Title" in points:
        return [f"{a} - {t}" for a, t in zip(points["Artist"], points["Title"])]
    return points["Artist"].astype(str).tolist()


def report(params: dict[str, Any], points: pd.DataFrame, features: list[str], matrix: pd.DataFrame,
           fit: Fit | None, notes: list[str], figures: dict[str, str]) -> str:
    grain = "tracks (artist x title)" if params["grain"] == "track" else "artists"
    lines = [f"## Clusters of {grain}", "",
             f"{len(points)} points, features: {', '.join(matrix.columns)}"
             + (" (streams and earnings as log(1 + x))" if params["log_scale"] else "")
             + "; standardised, then k-means (10 initialisations, random_state "
             + f"{params['random_state']}).", ""]
    if fit is not None:
        quality = f"silhouette {fit.silhouette:.3f}" if fit.silhouette is not None else (
            f"silhouette not computed: {fit.silhouette_reason}")
        how = "the best silhouette of the sweep" if params["sweep_k"] else "param n_clusters"
        lines += [f"**k = {fit.k}** ({how}): inertia {fit.inertia:.3g}, {quality}.", "",
                  "| cluster | points | median streams | median USD per 1,000 streams | median growth | examples |",
                  "|---:|---:|---:|---:|---:|---|"]
        table = points.assign(cluster=fit.labels)
        for cluster, members in table.groupby("cluster"):
            examples = ", ".join(_labels(members.nlargest(3, "streams")))
            lines.append(f"| {cluster} | {len(members)} | {members['streams'].median():,.0f} | "
                         f"{members['earnings_per_stream'].median() * 1000:.3f} | "
                         f"{members['growth'].median():+.2f} | {examples} |")
    lines += [""] + [f"- {note}" for note in notes if note]
    lines += ["", ("Growth is ln((streams of the latest 3 sale months + 1) / (streams of the 3 before + 1)): "
                   "0 is flat, +0.69 doubled, -0.69 halved.")]
    lines += [f"\n![{title}](figures/{name}.png)" for name, title in figures.items()]
    return "\n".join(lines)


@hookimpl
def register_experiments(register):
    register(artist_clustering)

"""One registry of training methods: :data:`METHODS` maps a name to its :class:`MethodSpec`.

Everything that depends on a method reads it from here: the training loop (which sampling plan and
which loss), :class:`~stratalab.train.TrainConfig` validation (which options the method needs), the
CLI help, the group-label columns of D3M Table 1, and the number of training examples a method
leaves out. Adding a method is one :class:`MethodSpec` (plus its tests); a new kind of sampling or
loss is one entry in :data:`SAMPLINGS` / :data:`LOSSES` and its branch in
:func:`stratalab.train.sampling.make_plan` / the loop.

This module imports nothing heavy (no torch), so the CLI can build its help from it.
"""

from __future__ import annotations

from dataclasses import dataclass

# How an epoch's examples are drawn (implemented in stratalab.train.sampling.make_plan).
SAMPLINGS: dict[str, str] = {
    "all": "every example once per epoch, shuffled",
    "class_subset": "every class subsampled to the smallest class (seeded, fixed for the run)",
    "class_upsample": "N draws with replacement, probability proportional to 1 / n_class",
    "class_mixture": "every class capped at r x the smallest class, then class upsampling inside that subset",
    "group_subset": "every group subsampled to the smallest group (seeded, fixed for the run)",
    "group_upsample": "N draws with replacement, probability proportional to 1 / n_group",
    "repeat": "each example repeats[i] times per epoch (JTT's upsampled error set)",
}
# How a batch's per-example losses become one loss (implemented in stratalab.train.loop.fit).
LOSSES: dict[str, str] = {
    "mean": "mean cross-entropy",
    "class_weighted": "class-weighted mean cross-entropy, w_c = N / (C n_c), normalised by the batch's weights",
    "group_dro": "online Group DRO: q-weighted sum of per-group mean losses, q updated by exponentiated gradient",
}
# The stages a method runs (implemented in stratalab.train.methods.run).
STAGES: dict[str, str] = {
    "train": "train with the method's sampling and loss",
    "identify_errors": "JTT stage 1: ERM for jtt_epochs, the train examples it misclassifies are the error set",
    "retrain_upsampled": "JTT stage 2: retrain from the same initial weights on the upsampled error set",
    "last_layer": "DFR: refit the last layer on held-out (val) features, group-balanced",
}


@dataclass(frozen=True)
class MethodSpec:
    """What a training method is.

    Attributes
    ----------
    name : str
        The name used in configs and on the CLI (``--method``).
    title : str
        Row name in tables (as in the papers).
    summary : str
        One line for ``--help``.
    reference : str
        The paper it comes from.
    train_groups : bool
        Needs a group label for every training example (true groups or e.g. GEORGE clusters).
    val_groups_fit : bool
        Fits something on val group labels (DFR's last layer), beyond model selection.
    sampling : str
        Key of :data:`SAMPLINGS`.
    loss : str
        Key of :data:`LOSSES`.
    stages : tuple of str
        Keys of :data:`STAGES`, in order.
    options : tuple of str
        :class:`~stratalab.train.TrainConfig` fields the method reads (listed in ``--help``).
    required : tuple of str
        Options that must be set (not None) for this method.
    """

    name: str
    title: str
    summary: str
    reference: str
    train_groups: bool = False
    val_groups_fit: bool = False
    sampling: str = "all"
    loss: str = "mean"
    stages: tuple[str, ...] = ("train",)
    options: tuple[str, ...] = ()
    required: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if self.sampling not in SAMPLINGS:
            raise ValueError(f"{self.name}: unknown sampling {self.sampling!r}; known: {', '.join(SAMPLINGS)}.")
        if self.loss not in LOSSES:
            raise ValueError(f"{self.name}: unknown loss {self.loss!r}; known: {', '.join(LOSSES)}.")
        bad = [s for s in self.stages if s not in STAGES]
        if bad or not self.stages:
            raise ValueError(f"{self.name}: unknown stage {bad[0] if bad else ''!r}; known: {', '.join(STAGES)}.")

    @property
    def subsamples(self) -> bool:
        """Whether the method trains on a fixed subset of train (so it leaves examples out)."""
        return self.sampling in ("class_subset", "group_subset", "class_mixture")

    def group_labels(self, select: str = "val_wga") -> str:
        """Which group labels the method uses, as 'train / val' (the columns of D3M Table 1), for
        model selection by ``select``."""
        from .selection import LABELS_NEEDED

        train = "yes" if self.train_groups else "no"
        val = "yes" if LABELS_NEEDED.get(select) == "val groups" else "no"
        if self.val_groups_fit:
            val = "yes (fits the last layer on val)"
        return f"{train} / {val}"


METHODS: dict[str, MethodSpec] = {spec.name: spec for spec in (
    MethodSpec("erm", "ERM", "empirical risk minimisation (mean cross-entropy)", "Vapnik 1992"),
    MethodSpec("gdro", "GroupDRO", "online Group DRO over train groups", "Sagawa et al. 2020, Alg. 1",
               train_groups=True, loss="group_dro", options=("gdro_eta", "gdro_adjustment", "gdro_balanced_sampler")),
    MethodSpec("subsetting", "Subsetting", "class balancing: subsample every class to the smallest",
               "LaBonte et al. 2024; Idrissi et al. 2022", sampling="class_subset"),
    MethodSpec("upsampling", "Upsampling", "class balancing: draw classes with equal probability",
               "LaBonte et al. 2024; Idrissi et al. 2022", sampling="class_upsample"),
    MethodSpec("upweighting", "Upweighting", "class balancing: weight the loss by N / (C n_c)",
               "LaBonte et al. 2024; Idrissi et al. 2022", loss="class_weighted"),
    MethodSpec("mixture", "Mixture", "class balancing: cap classes at r x the smallest, then upsample",
               "LaBonte et al. 2024, Sec. 4", sampling="class_mixture", options=("mixture_ratio",),
               required=("mixture_ratio",)),
    MethodSpec("subg", "SUBG", "group balancing: subsample every group to the smallest", "Idrissi et al. 2022",
               train_groups=True, sampling="group_subset"),
    MethodSpec("rwg", "RWG", "group balancing: draw groups with equal probability", "Idrissi et al. 2022",
               train_groups=True, sampling="group_upsample"),
    MethodSpec("jtt", "JTT", "Just Train Twice: ERM finds errors, retrain with the errors upsampled",
               "Liu et al. 2021, Alg. 1", sampling="repeat", stages=("identify_errors", "retrain_upsampled"),
               options=("jtt_epochs", "jtt_upsample")),
    MethodSpec("dfr", "DFR", "Deep Feature Reweighting: ERM, then refit the last layer on val groups",
               "Kirichenko et al. 2023", val_groups_fit=True, stages=("train", "last_layer"),
               options=("dfr_cs", "dfr_retrains")),
)}


def get_method(name: str) -> MethodSpec:
    """The spec of ``name``, or a ValueError listing the known methods."""
    if name not in METHODS:
        raise ValueError(f"unknown method {name!r}; choose one of {', '.join(METHODS)}.")
    return METHODS[name]


def methods_help() -> str:
    """``--method`` help, built from the registry."""
    return "; ".join(f"{s.name}: {s.summary}" + (f" (options: {', '.join(s.options)})" if s.options else "")
                     for s in METHODS.values())

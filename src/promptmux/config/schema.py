"""The config schema: frozen, validated pydantic models.

Every model forbids unknown keys, so a typo such as `train.learning_rate` is an error rather than a
silently ignored setting. Cross-field rules that need the whole config live in `load.check_config`,
which names the dotted key at fault.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field

TaskType = Literal["classification", "multilabel", "regression", "token", "generation"]
DataFormat = Literal["csv", "tsv", "jsonl", "parquet", "datasets", "conll", "callable"]

# Metrics each task type can report, the first one being the default "main" metric that feeds the
# aggregate score (all are higher-is-better).
TASK_METRICS: dict[str, tuple[str, ...]] = {
    "classification": ("accuracy", "macro_f1", "f1", "mcc"),
    "multilabel": ("micro_f1", "macro_f1", "subset_accuracy"),
    "regression": ("pearson", "spearman", "neg_mse"),
    "token": ("entity_f1", "accuracy"),
    # text-to-text answers (model.kind: decoder): ROUGE F-measures and exact match, 0-100
    "generation": ("rougeL", "rouge1", "rouge2", "exact_match"),
}


def _labels_as_strings(value: Any) -> Any:
    # Data labels are compared as strings, so `labels: [0, 1]` in YAML means "0", "1".
    if isinstance(value, list):
        return [str(v) if isinstance(v, (int, float)) and not isinstance(v, bool) else v for v in value]
    return value


def _keys_as_strings(value: Any) -> Any:
    # A verbalizer `{0: terrible, 1: great}` in YAML has int keys; labels are compared as strings.
    if isinstance(value, dict):
        return {str(k) if isinstance(k, (int, float)) and not isinstance(k, bool) else k: v for k, v in value.items()}
    return value


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, strict=False)


class SplitConfig(Strict):
    """How to carve dev/test splits out of a source that has only one split (or no dev split)."""

    dev_fraction: float = Field(0.1, ge=0.0, lt=1.0)
    test_fraction: float = Field(0.0, ge=0.0, lt=1.0)
    seed: int = 0


class DataConfig(Strict):
    """Where a task's rows come from.

    Either give files per split (`train`, `dev`, `test`), or one `path` (or `callable`) to carve
    splits from with `split`. A callable (`module:function`) returns an iterable of dicts, or a dict
    of split name -> iterable of dicts.
    """

    format: DataFormat | None = None  # inferred from the file extension when absent
    train: str | None = None
    dev: str | None = None
    test: str | None = None
    path: str | None = None
    callable: str | None = None
    kwargs: dict[str, Any] = Field(default_factory=dict)
    split: SplitConfig = Field(default_factory=SplitConfig)
    # Delimited text (csv/tsv)
    separator: str | None = None  # default: "," for csv, "\t" for tsv
    quoting: Literal["minimal", "none"] = "minimal"
    encoding: str = "utf-8-sig"  # reads plain UTF-8 too, and strips a BOM
    header: bool = True
    columns: list[str] | None = None  # names for header-less files (csv/tsv/conll)
    # Bad rows: stop with an error naming file, row and field, or skip them and log the count.
    on_bad_row: Literal["error", "skip"] = "error"
    # Keep at most this many rows per split (after carving); handy for quick runs.
    max_examples: dict[Literal["train", "dev", "test"], Annotated[int, Field(ge=0)]] = Field(default_factory=dict)


class FieldsConfig(Strict):
    """Which record fields hold the text(s) and the label."""

    text: str = "text"
    text_b: str | None = None
    label: str = "label"


class PromptRuleConfig(Strict):
    """Use `template` for the examples that satisfy every condition in `when`.

    Conditions (all optional): `min_words` / `max_words` (length of `text` in words), `question`
    (true: `text` asks a question), `field` + `equals` / `in` (a metadata field of the row).
    """

    when: dict[str, Any] = Field(default_factory=dict)
    template: str


class PromptConfig(Strict):
    """The task's hard prompt: a text template wrapped around each input.

    Placeholders: `{text}` and `{text_b}` (the mapped input fields). `{sep}` splits the result into
    the two segments of a text pair, e.g. `"Premise: {text}{sep}Hypothesis: {text_b}"`; a pair
    template without `{sep}` joins both texts into one segment.
    """

    template: str | None = None
    # Rules pick the template per example from its fields: the first rule whose `when` holds wins,
    # `template` is the fallback (see promptmux.prompts.rules).
    rules: list[PromptRuleConfig] = Field(default_factory=list)
    # Candidate templates for prompt search, ensembles and adaptive re-selection.
    pool: list[str] = Field(default_factory=list)
    # Inference: average predictions over this many prompts (`template` first, then the pool).
    ensemble: int = Field(1, ge=1)
    # Training: re-score `template` + `pool` on dev every `adaptive_every` evaluations and switch the
    # task to its best prompt (logged in metrics.jsonl).
    adaptive: bool = False
    adaptive_every: int = Field(1, ge=1)


class TaskConfig(Strict):
    type: TaskType
    data: DataConfig
    fields: FieldsConfig = Field(default_factory=FieldsConfig)
    # Declared label set (classification/multilabel/token). Inferred from train data when absent.
    labels: Annotated[list[str] | None, BeforeValidator(_labels_as_strings)] = None
    label_separator: str | None = None  # multilabel: split a string label on this
    # overrides model.pooling for this task; `pair` (text pairs): [u, v, |u-v|, u*v] of the two texts' means
    pooling: Literal["cls", "mean", "pair"] | None = None
    metric: str | None = None  # main metric; default per task type (see TASK_METRICS)
    weight: float = Field(1.0, ge=0.0)  # used by the `static` weighting
    prompt: PromptConfig = Field(default_factory=PromptConfig)
    # model.kind: decoder only (promptmux.t2t): the words the decoder answers with for each label
    # of a classification task, and the answer budget of a generation task (else model's).
    verbalizer: Annotated[dict[str, str] | None, BeforeValidator(_keys_as_strings)] = None
    max_new_tokens: int | None = Field(None, ge=1, le=4096)


class FreezeConfig(Strict):
    strategy: Literal["none", "embeddings", "bottom_k", "top_k", "backbone"] = "none"
    k: int = Field(0, ge=0)


# Prompt kinds whose vectors are free parameters, one entry per task (a ParameterDict): they can be
# reparameterized (`model.prompts.reparam`), and a task can get its own beside them (add-task).
VECTOR_KINDS = ("shallow", "deep", "prefix", "late")
INSTANCE_KINDS = ("late", "prefix")  # kinds with an instance-aware term (`instance_hidden`)


class SoftPromptConfig(Strict):
    """Learned prompt vectors that tell the shared encoder which task each row belongs to.

    kinds: `none`; `shallow` (per-task vectors prepended to the input embeddings, prompt tuning);
    `deep` (per-task, per-layer prompt vectors at each layer's input); `prefix` (per-task key and
    value prefixes in each layer's attention, P-tuning v2); `late` (per-task vectors entering at one
    middle layer's input, late prompt tuning); `shared` (one shared prompt
    modulated per task by a low-rank factor, multi-task prompt tuning); `generated` (prompts made by
    a small network from a learned task embedding, P_t = g(W e_t + b)).
    """

    kind: Literal["none", "shallow", "deep", "prefix", "late", "shared", "generated"] = "none"
    length: int = Field(20, ge=1, le=512)
    layer: int | None = Field(None, ge=0)  # late: the layer whose input takes the prompt (default: the middle one)
    # late, prefix: width of a shared network that adds to each row's prompt a term made from its own
    # text where the prompt acts (model/prompts/instance.py); None: the task's vectors alone
    instance_hidden: int | None = Field(None, ge=1)
    rank: int = Field(1, ge=1)  # shared: rank of each task's modulation
    task_embedding_dim: int = Field(32, ge=1)  # generated: size of e_t
    generator_hidden: int = Field(256, ge=1)  # generated: hidden width of g
    init: Literal["vocab", "random"] = "vocab"  # start from embeddings of random vocabulary tokens
    lr: float | None = Field(None, gt=0)  # prompts usually want a larger rate than the encoder
    # the rate of the prompt's small networks (residual, instance term), which a rate good for free
    # vectors can overshoot; default: lr
    network_lr: float | None = Field(None, gt=0)
    # residual: every prompt vector passes through a small shared network with a skip connection,
    # P' = P + MLP(P) (residual prompt tuning; kinds shallow, deep, prefix, late; model/prompts/reparam.py).
    reparam: Literal["none", "residual"] = "none"
    reparam_hidden: int = Field(16, ge=1)  # residual: the network's bottleneck width


class LoraConfig(Strict):
    """Low-rank adapters (LoRA) on the encoder's Linear layers; the base weights stay frozen.

    kinds: `none`; `shared` (one adapter for every task, built with peft); `per_task` (one adapter
    per task, each row of a mixed-task batch routed to its own task's adapter). `target_modules`
    match Linear layer names as peft matches them: a name equal to the entry or ending in
    `.<entry>` (`query` matches `encoder.layer.0.attention.self.query`).
    """

    kind: Literal["none", "shared", "per_task"] = "none"
    r: int = Field(8, ge=1)
    alpha: float = Field(16.0, gt=0)  # the update is scaled by alpha / r
    dropout: float = Field(0.0, ge=0.0, lt=1.0)
    target_modules: list[str] = Field(default_factory=lambda: ["query", "value"])
    lr: float | None = Field(None, gt=0)  # LoRA usually wants a larger rate than full fine-tuning


class ModelConfig(Strict):
    # encoder: shared encoder + one head per task; decoder: a causal LM answering every task in
    # text (classification through verbalizers, generation natively; see promptmux.t2t).
    kind: Literal["encoder", "decoder"] = "encoder"
    backbone: str = "minilm"  # a local Hugging Face folder, or the alias of a packaged model
    max_length: int = Field(128, ge=8, le=4096)
    pooling: Literal["cls", "mean"] = "mean"
    head_dropout: float = Field(0.1, ge=0.0, lt=1.0)
    freeze: FreezeConfig = Field(default_factory=FreezeConfig)
    prompts: SoftPromptConfig = Field(default_factory=SoftPromptConfig)
    lora: LoraConfig = Field(default_factory=LoraConfig)
    # A smaller student: keep only the first N transformer layers of the checkpoint.
    num_layers: int | None = Field(None, ge=1)
    # decoder: most tokens a generation task's answer may have (tasks.<name>.max_new_tokens wins).
    max_new_tokens: int = Field(32, ge=1, le=4096)


class SamplingConfig(Strict):
    """Which task the next batch comes from."""

    strategy: str = "temperature"  # a registered sampler (promptmux.data.samplers)
    temperature: float = Field(2.0, gt=0.0)
    # false: each batch holds one task; true: each batch mixes rows of several tasks.
    mixed: bool = False
    # Strategy options, e.g. {cap: 20000} for `capped` (see each sampler's docstring).
    options: dict[str, Any] = Field(default_factory=dict)


class WeightingConfig(Strict):
    strategy: str = "equal"
    options: dict[str, Any] = Field(default_factory=dict)


class AdversarialConfig(Strict):
    """Adversarial training on the encoder's embedding output (see promptmux.train.adversarial).

    `fgm`: one perturbation of L2 norm `epsilon` per row along the loss gradient (Miyato et al.
    2017); `pgd`: `steps` normalized ascent steps of size `alpha`, projected onto the epsilon-ball
    (Madry et al. 2018). The adversarial loss, times `weight`, is added to the clean loss.
    """

    method: Literal["none", "fgm", "pgd"] = "none"
    epsilon: float = Field(1.0, gt=0)  # L2 radius per row (all its real tokens together)
    alpha: float = Field(0.3, gt=0)  # pgd: step size
    steps: int = Field(3, ge=1)  # pgd: ascent steps
    tasks: list[str] | None = None  # perturb only these tasks' rows (default: all tasks)
    weight: float = Field(1.0, ge=0)


class TrainConfig(Strict):
    batch_size: int = Field(32, ge=1)
    eval_batch_size: int = Field(128, ge=1)
    max_steps: int | None = Field(None, ge=1)
    epochs: float | None = Field(None, gt=0)
    lr: float = Field(5e-5, gt=0)
    head_lr: float | None = Field(None, gt=0)  # heads often want a larger rate than the encoder
    weight_decay: float = Field(0.01, ge=0)
    warmup_ratio: float = Field(0.06, ge=0, lt=1)
    scheduler: Literal["linear", "cosine", "constant"] = "linear"
    grad_accum: int = Field(1, ge=1)
    max_grad_norm: float | None = Field(1.0, gt=0)
    # auto: bf16 autocast where the hardware multiplies bf16 natively, else fp32 (promptmux.precision)
    precision: Literal["auto", "bf16", "fp32"] = "auto"
    eval_every: int = Field(200, ge=1)
    early_stopping_patience: int | None = Field(None, ge=1)
    log_every: int = Field(20, ge=1)
    length_buckets: bool = True
    bucket_size: int = Field(64, ge=1)  # batches per length-sorted pool
    progress: bool = True
    adversarial: AdversarialConfig = Field(default_factory=AdversarialConfig)


class OutputConfig(Strict):
    dir: str = "runs/promptmux"
    overwrite: bool = False
    tensorboard: bool = True


class DistillConfig(Strict):
    """Knowledge distillation from trained bundles into the model being trained (the student).

    Give `teacher` (one multi-task bundle for every distilled task) or `teachers` (task -> bundle,
    one per task). Paths are bundle or run folders, relative to the current folder like
    `output.dir`. Each distilled task's loss becomes (1 - alpha) * task loss + alpha * distill loss
    (see promptmux.train.distill).
    """

    teacher: str | None = None
    teachers: dict[str, str] | None = None
    temperature: float = Field(2.0, gt=0)
    alpha: float = Field(0.5, ge=0.0, le=1.0)
    tasks: list[str] | None = None  # distill only these tasks (default: every task with a teacher)


class Config(Strict):
    seed: int = 42
    model: ModelConfig = Field(default_factory=ModelConfig)
    tasks: dict[str, TaskConfig]
    sampling: SamplingConfig = Field(default_factory=SamplingConfig)
    weighting: WeightingConfig = Field(default_factory=WeightingConfig)
    train: TrainConfig = Field(default_factory=TrainConfig)
    output: OutputConfig = Field(default_factory=OutputConfig)
    distill: DistillConfig | None = None

    def main_metric(self, task: str) -> str:
        t = self.tasks[task]
        return t.metric or TASK_METRICS[t.type][0]

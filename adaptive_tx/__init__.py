"""adaptive_tx: adaptive gradient methods as small, composable Optax transformations.

Each method is one per-coordinate `Rule`; the Optax transformations, and the aliases that chain
them, are derived from it.
"""

from adaptive_tx import compat, sparse
from adaptive_tx.aliases import (
    adafactor,
    adagrad,
    adam,
    adamax,
    adamaxw,
    adamw,
    amsgrad,
    nadam,
    nadamw,
    radam,
    rmsprop,
    rowwise_adagrad,
)
from adaptive_tx.aliases_extended import (
    adabelief,
    adadelta,
    adan,
    ademamix,
    adopt,
    ftrl,
    lamb,
    laprop,
    lion,
    novograd,
    rprop,
    sm3,
    yogi,
)
from adaptive_tx.averaging import (
    ScheduleFreeState,
    schedule_free,
    schedule_free_adamw,
    schedule_free_eval_params,
)
from adaptive_tx.cover_set import CoverArray, CoverSet, ScaleBySm3State, scale_by_sm3
from adaptive_tx.delta import ScaleByAdadeltaState, scale_by_adadelta
from adaptive_tx.diagnostics import (
    RateSummary,
    effective_learning_rate,
    effective_learning_rate_summary,
)
from adaptive_tx.ema_of_squares import ScaleByEmaOfSquaresState, scale_by_ema_of_squares
from adaptive_tx.factored import (
    BlockMean,
    Factored,
    FactoredArray,
    scale_by_factored_ema_of_squares,
)
from adaptive_tx.ftrl_proximal import ScaleByFtrlState, scale_by_ftrl
from adaptive_tx.guards import SkipNonfiniteState, check_restored_state, skip_nonfinite
from adaptive_tx.interop import from_optax_state
from adaptive_tx.layerwise import ScaleByNovogradState, scale_by_novograd, scale_by_trust_ratio
from adaptive_tx.learning_rate import (
    ScaleByLearningRateState,
    ScaleByScheduledLearningRateState,
    scale_by_learning_rate,
)
from adaptive_tx.masking import cautious, cautious_mask
from adaptive_tx.mixed_moments import (
    ScaleByAdanState,
    ScaleByAdEMAMixState,
    scale_by_adan,
    scale_by_ademamix,
)
from adaptive_tx.moments import (
    ScaleByBiasCorrectedMomentsState,
    ScaleByInfNormMomentsState,
    ScaleByRectifiedMomentsState,
    scale_by_bias_corrected_moments,
    scale_by_inf_norm_moments,
    scale_by_rectified_moments,
)
from adaptive_tx.normalized_momentum import (
    ScaleByAdoptState,
    ScaleByLaPropState,
    scale_by_adopt,
    scale_by_laprop,
)
from adaptive_tx.rule import Rule, dense_transformation
from adaptive_tx.second_moments import (
    ScaleByBeliefState,
    ScaleByYogiState,
    scale_by_belief,
    scale_by_yogi,
)
from adaptive_tx.sharding import state_shardings
from adaptive_tx.sign import ScaleByLionState, ScaleByRpropState, scale_by_lion, scale_by_rprop
from adaptive_tx.sparse import RowSparse
from adaptive_tx.state_precision import (
    Cast,
    Float8Blockwise,
    Int8Blockwise,
    QuantizedArray,
    StochasticRounding,
    state_nbytes,
)
from adaptive_tx.sum_of_squares import (
    ScaleByRowwiseSumOfSquaresState,
    ScaleBySumOfSquaresState,
    scale_by_rowwise_sum_of_squares,
    scale_by_sum_of_squares,
)
from adaptive_tx.weight_decay import AddDecoupledWeightDecayState, add_decoupled_weight_decay

__version__ = "0.1.0"  # the one place: pyproject.toml reads it (tool.setuptools.dynamic)

__all__ = (
    "AddDecoupledWeightDecayState",
    "BlockMean",
    "CoverArray",
    "CoverSet",
    "Cast",
    "Factored",
    "FactoredArray",
    "Float8Blockwise",
    "Int8Blockwise",
    "QuantizedArray",
    "RateSummary",
    "RowSparse",
    "Rule",
    "ScaleByAdEMAMixState",
    "ScaleByAdanState",
    "ScaleByAdoptState",
    "ScaleByAdadeltaState",
    "ScaleByBeliefState",
    "ScaleByBiasCorrectedMomentsState",
    "ScaleByEmaOfSquaresState",
    "ScaleByFtrlState",
    "ScaleByInfNormMomentsState",
    "ScaleByLaPropState",
    "ScaleByLearningRateState",
    "ScaleByLionState",
    "ScaleByNovogradState",
    "ScaleByRectifiedMomentsState",
    "ScaleByRowwiseSumOfSquaresState",
    "ScaleByRpropState",
    "ScaleByScheduledLearningRateState",
    "ScaleBySm3State",
    "ScaleBySumOfSquaresState",
    "ScaleByYogiState",
    "ScheduleFreeState",
    "SkipNonfiniteState",
    "StochasticRounding",
    "adabelief",
    "adadelta",
    "adafactor",
    "adagrad",
    "adam",
    "adamax",
    "adamaxw",
    "adamw",
    "adan",
    "add_decoupled_weight_decay",
    "ademamix",
    "adopt",
    "amsgrad",
    "cautious",
    "cautious_mask",
    "check_restored_state",
    "compat",
    "dense_transformation",
    "effective_learning_rate",
    "effective_learning_rate_summary",
    "from_optax_state",
    "laprop",
    "ftrl",
    "lamb",
    "lion",
    "nadam",
    "nadamw",
    "novograd",
    "radam",
    "rmsprop",
    "rowwise_adagrad",
    "scale_by_adan",
    "scale_by_ademamix",
    "scale_by_adopt",
    "rprop",
    "scale_by_belief",
    "scale_by_bias_corrected_moments",
    "scale_by_ema_of_squares",
    "scale_by_factored_ema_of_squares",
    "scale_by_ftrl",
    "scale_by_inf_norm_moments",
    "scale_by_laprop",
    "scale_by_learning_rate",
    "scale_by_lion",
    "scale_by_rectified_moments",
    "scale_by_rowwise_sum_of_squares",
    "scale_by_rprop",
    "scale_by_novograd",
    "scale_by_sm3",
    "scale_by_sum_of_squares",
    "scale_by_trust_ratio",
    "scale_by_yogi",
    "schedule_free",
    "schedule_free_adamw",
    "schedule_free_eval_params",
    "skip_nonfinite",
    "scale_by_adadelta",
    "sm3",
    "sparse",
    "state_nbytes",
    "state_shardings",
    "yogi",
)

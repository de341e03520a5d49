"""adaptive_tx: adaptive gradient methods as small, composable Optax transformations.

Each method is one per-coordinate `Rule`; the Optax transformations, and the aliases that chain
them, are derived from it.
"""

from adaptive_tx.aliases import adagrad
from adaptive_tx.aliases import adam
from adaptive_tx.aliases import adamax
from adaptive_tx.aliases import adamaxw
from adaptive_tx.aliases import adamw
from adaptive_tx.aliases import amsgrad
from adaptive_tx.aliases import nadam
from adaptive_tx.aliases import nadamw
from adaptive_tx.aliases import radam
from adaptive_tx.aliases import rmsprop
from adaptive_tx.ema_of_squares import ScaleByEmaOfSquaresState
from adaptive_tx.ema_of_squares import scale_by_ema_of_squares
from adaptive_tx.learning_rate import ScaleByLearningRateState
from adaptive_tx.learning_rate import scale_by_learning_rate
from adaptive_tx.moments import ScaleByBiasCorrectedMomentsState
from adaptive_tx.moments import ScaleByInfNormMomentsState
from adaptive_tx.moments import ScaleByRectifiedMomentsState
from adaptive_tx.moments import scale_by_bias_corrected_moments
from adaptive_tx.moments import scale_by_inf_norm_moments
from adaptive_tx.moments import scale_by_rectified_moments
from adaptive_tx.rule import Rule
from adaptive_tx.rule import dense_transformation
from adaptive_tx.sum_of_squares import ScaleBySumOfSquaresState
from adaptive_tx.sum_of_squares import scale_by_sum_of_squares
from adaptive_tx.weight_decay import AddDecoupledWeightDecayState
from adaptive_tx.weight_decay import add_decoupled_weight_decay

__version__ = "0.1.0"

__all__ = (
    "AddDecoupledWeightDecayState",
    "Rule",
    "ScaleByBiasCorrectedMomentsState",
    "ScaleByEmaOfSquaresState",
    "ScaleByInfNormMomentsState",
    "ScaleByLearningRateState",
    "ScaleByRectifiedMomentsState",
    "ScaleBySumOfSquaresState",
    "adagrad",
    "adam",
    "adamax",
    "adamaxw",
    "adamw",
    "add_decoupled_weight_decay",
    "amsgrad",
    "dense_transformation",
    "nadam",
    "nadamw",
    "radam",
    "rmsprop",
    "scale_by_bias_corrected_moments",
    "scale_by_ema_of_squares",
    "scale_by_inf_norm_moments",
    "scale_by_learning_rate",
    "scale_by_rectified_moments",
    "scale_by_sum_of_squares",
)

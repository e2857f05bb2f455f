#!/usr/bin/env python3
"""Reference densities of Optuna's TPE Parzen estimator, for tests/fixtures/tpe.json.

For fixed observations of each kind of key (uniform, log-uniform, integer, categorical), the
log density (log probability for integers and choices) that optuna.samplers._tpe's
_ParzenEstimator gives at fixed points, with TPESampler's default parameters (prior weight 1,
magic clip, no endpoints, default weights, univariate). Log-uniform densities are Optuna's, in
the original space (the test subtracts log x from runner's log-space density).

Usage (Optuna is not a dependency of runner; a venv of its own):
    python3 -m venv /tmp/optuna && /tmp/optuna/bin/pip install optuna==5.1.0
    /tmp/optuna/bin/python scripts/make_tpe_fixtures.py > tests/fixtures/tpe.json
"""
import json

import numpy as np
import optuna
from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution
from optuna.samplers._tpe.parzen_estimator import _ParzenEstimator, _ParzenEstimatorParameters
from optuna.samplers._tpe.sampler import default_weights

PARAMS = _ParzenEstimatorParameters(
    prior_weight=1.0, consider_magic_clip=True, consider_endpoints=False, weights=default_weights, multivariate=False
)


def case(dist, kind, low, high, observations, points, internal=lambda v: v):
    pe = _ParzenEstimator({"x": np.array([internal(o) for o in observations], dtype=float)}, {"x": dist}, PARAMS)
    log_pdf = pe.log_pdf({"x": np.array([internal(p) for p in points], dtype=float)})
    return {"kind": kind, "low": low, "high": high, "observations": observations, "points": points,
            "log_pdf": [float(v) for v in log_pdf]}


def main():
    obs30 = [round(0.1 + 9.8 * ((i * 7919) % 101) / 101, 4) for i in range(30)]
    choices = ["a", "b", "c", "d"]
    out = {
        "optuna": optuna.__version__,
        "uniform_none": case(FloatDistribution(0.0, 10.0), "uniform", 0.0, 10.0, [], [0.5, 5.0, 9.9]),
        "uniform_one": case(FloatDistribution(0.0, 10.0), "uniform", 0.0, 10.0, [3.0], [0.5, 3.0, 9.9]),
        "uniform_three": case(FloatDistribution(-1.0, 3.0), "uniform", -1.0, 3.0, [0.2, 0.25, 2.5],
                              [-0.9, 0.22, 1.0, 2.5, 2.99]),
        "uniform_thirty": case(FloatDistribution(0.0, 10.0), "uniform", 0.0, 10.0, obs30, [0.3, 2.2, 5.0, 7.7, 9.6]),
        "log_uniform": case(FloatDistribution(1e-5, 1.0, log=True), "log_uniform", 1e-5, 1.0, [1e-3, 2e-3, 0.3],
                            [2e-5, 1e-3, 1.5e-3, 0.05, 0.9]),
        "int_uniform": case(IntDistribution(2, 9), "int_uniform", 2, 9, [3, 3, 8], [2, 3, 4, 8, 9]),
        "choice": case(CategoricalDistribution(choices), "choice", 0, 3, [1, 1, 3], [0, 1, 2, 3]),
    }
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()

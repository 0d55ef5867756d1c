"""synthetic.py — the fixed synthetic classification problem behind the example model: the
distribution train_example.py trains on and make_data.py writes HDF5 shards from.

The distribution (all constants fixed here, so any seed draws from the same distribution):
  * a class k in {0, 1, 2}, equally likely;
  * a latent point z in R^4: z = CENTRES[k] + LATENT_NOISE * N(0, I). The centres are the
    corners of an equilateral triangle of radius 1.5 in the first two latent coordinates; the
    last two coordinates carry no class information;
  * 16 features through a fixed nonlinear map:
        x = SCALES * (tanh(z @ MIX_A) + 0.5 * sin(z @ MIX_B) + FEATURE_NOISE * N(0, I)) + OFFSETS
    MIX_A, MIX_B [4, 16], SCALES, OFFSETS [16] are drawn once from numpy's PCG64 with seed
    MAP_SEED. SCALES (0.5 .. 20) and OFFSETS (-50 .. 50) give the features very different
    ranges, which is what the model's input_mean / input_std standardisation is for.
The classes overlap (latent noise 0.8 against centres 2.6 apart), so no classifier is
perfect: even one that saw z itself would be right about 91% of the time.

Usage: features, labels = sample(n, seed)   # float32 [n, 16], int32 [n]
"""
import numpy as np

N_FEATURES = 16
N_CLASSES = 3
LATENT = 4
LATENT_NOISE = 0.8
FEATURE_NOISE = 0.05
MAP_SEED = 20240611

_R = 1.5
CENTRES = np.array([[_R, 0.0, 0.0, 0.0],
                    [-_R / 2, _R * np.sqrt(3) / 2, 0.0, 0.0],
                    [-_R / 2, -_R * np.sqrt(3) / 2, 0.0, 0.0]])

_map_rng = np.random.default_rng(MAP_SEED)
MIX_A = _map_rng.normal(0.0, 0.7, size=(LATENT, N_FEATURES))
MIX_B = _map_rng.normal(0.0, 0.7, size=(LATENT, N_FEATURES))
SCALES = np.exp(_map_rng.uniform(np.log(0.5), np.log(20.0), size=N_FEATURES))
OFFSETS = _map_rng.uniform(-50.0, 50.0, size=N_FEATURES)
del _map_rng


def sample(n, seed):
    """n rows of the distribution above. seed: an int or a numpy SeedSequence / Generator.
    Returns (features float32 [n, 16], labels int32 [n])."""
    rng = seed if isinstance(seed, np.random.Generator) else np.random.default_rng(seed)
    labels = rng.integers(0, N_CLASSES, size=n)
    z = CENTRES[labels] + LATENT_NOISE * rng.standard_normal((n, LATENT))
    noise = FEATURE_NOISE * rng.standard_normal((n, N_FEATURES))
    x = SCALES * (np.tanh(z @ MIX_A) + 0.5 * np.sin(z @ MIX_B) + noise) + OFFSETS
    return x.astype(np.float32), labels.astype(np.int32)

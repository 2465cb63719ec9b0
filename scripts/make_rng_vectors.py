#!/usr/bin/env python3
"""Writes tests/fixtures/rng/threefry_vectors.json: reference outputs of `jax.random`.

The Rust host RNG (src/rng.rs) and the in-graph RNG (xla_graphs/src/random.rs) are checked
against these vectors, so that a key gives the same numbers here as in JAX.

Usage (CPU JAX from PyPI, kept out of the repo):
    python3 -m venv /tmp/jaxvenv && /tmp/jaxvenv/bin/pip install jax
    /tmp/jaxvenv/bin/python scripts/make_rng_vectors.py

Two passes run in separate processes, since `jax_enable_x64` changes how a seed becomes a key
and what dtype `float` means: the default 32-bit pass (keys, split, fold_in, bits, f32 uniform
and normal, int32 randint) and a 64-bit pass (seed mapping with x64, f64 uniform and normal).
Both set `jax_threefry_partitionable=True` explicitly (the default since JAX 0.5).

Floats are stored as their IEEE bit patterns (u32 for f32, u64 for f64), keys as pairs of u32.
"""

import json
import os
import subprocess
import sys

OUT = os.path.join(
    os.path.dirname(os.path.abspath(__file__)), "..", "tests", "fixtures", "rng", "threefry_vectors.json"
)

# Python ints, fed to PRNGKey as JAX users do. With x64 off JAX keeps only the low 32 bits
# (the int64 seed is canonicalized to int32); with x64 on, the int64 is bitcast to (hi, lo).
SEEDS = [0, 1, 42, 2**31 + 5, 2**32 + 3, 2**40 + 7, 0x123456789ABCDEF, 2**63 - 1, -1, -(2**40) - 3]
# Seeds above 2**63 cannot be Python ints for PRNGKey; with x64 on they go in as np.uint64.
U64_SEEDS = [2**63 + 9, 2**64 - 1, 0xDEADBEEFCAFEF00D]


def setup(x64):
    import jax

    jax.config.update("jax_platforms", "cpu")
    jax.config.update("jax_threefry_partitionable", True)
    jax.config.update("jax_enable_x64", x64)
    return jax


def key_list(jax, key):
    return [int(v) for v in jax.random.key_data(key).reshape(-1)]


def sample_keys(jax):
    """Keys the samplers are checked on: plain seeds and split/fold_in results, so both words
    of the key are exercised."""
    k0 = jax.random.PRNGKey(0)
    k42 = jax.random.PRNGKey(42)
    return [
        k0,
        k42,
        jax.random.PRNGKey(2**31 + 5),
        jax.random.split(k42, 3)[2],
        jax.random.fold_in(k0, 123456),
    ]


def bits_u32(arr):
    import numpy as np

    return [int(v) for v in np.asarray(arr).astype(np.float32).view(np.uint32).reshape(-1)]


def bits_u64(arr):
    import numpy as np

    return [int(v) for v in np.asarray(arr).astype(np.float64).view(np.uint64).reshape(-1)]


def pass_x32():
    import numpy as np

    jax = setup(False)
    import jax.numpy as jnp

    out = {}
    out["seeds_x32"] = [
        {"seed": s, "seed_u64": s % 2**64, "key": key_list(jax, jax.random.PRNGKey(s))} for s in SEEDS
    ]

    keys = sample_keys(jax)
    out["split"] = []
    for key in keys[:3]:
        for n in (2, 3, 4):
            sub = jax.random.split(key, n)
            out["split"].append(
                {"key": key_list(jax, key), "shape": [n], "keys": [key_list(jax, k) for k in sub]}
            )
    sub = jax.random.split(keys[3], (2, 3))
    out["split"].append(
        {"key": key_list(jax, keys[3]), "shape": [2, 3], "keys": [key_list(jax, k) for k in sub.reshape(-1, 2)]}
    )

    out["fold_in"] = []
    for key in keys[:3]:
        for data in (0, 1, 7, 123456, 2**31 + 1, 2**32 - 1):
            out["fold_in"].append(
                {"key": key_list(jax, key), "data": data, "key_out": key_list(jax, jax.random.fold_in(key, data))}
            )

    out["bits_u32"] = []
    for key in keys:
        for shape in ((), (1,), (2,), (7,), (3, 5), (2, 3, 4)):
            b = jax.random.bits(key, shape, jnp.uint32)
            out["bits_u32"].append(
                {"key": key_list(jax, key), "shape": list(shape), "bits": [int(v) for v in np.asarray(b).reshape(-1)]}
            )

    out["uniform_f32"] = []
    for key in keys:
        for shape, lo, hi in (((9,), 0.0, 1.0), ((4, 5), 0.0, 1.0), ((11,), -2.0, 3.0)):
            u = jax.random.uniform(key, shape, jnp.float32, lo, hi)
            out["uniform_f32"].append(
                {"key": key_list(jax, key), "shape": list(shape), "minval": lo, "maxval": hi, "bits": bits_u32(u)}
            )

    out["normal_f32"] = []
    for i, key in enumerate(keys):
        for shape in ((9,), (3, 7)) + (((1024,),) if i == 0 else ()):
            n = jax.random.normal(key, shape, jnp.float32)
            out["normal_f32"].append({"key": key_list(jax, key), "shape": list(shape), "bits": bits_u32(n)})

    # erf_inv alone, on the ends of normal()'s input range and through both polynomial branches
    # (w = -log1p(-x*x) below or above 5), so the in-graph polynomial is checked where it is weakest.
    f32 = np.float32
    lo = np.nextafter(f32(-1), f32(0))
    xs = [lo, np.nextafter(lo, f32(0)), f32(-0.9999), f32(-0.9966), f32(-0.5), f32(-1e-3), f32(0), f32(1e-7),
          f32(0.25), f32(0.9), f32(0.99), f32(0.9966), f32(0.99999), np.nextafter(f32(1), f32(0))]
    xs += list(np.linspace(-0.999, 0.999, 25, dtype=np.float32))
    xs = np.array(xs, dtype=np.float32)
    y = jax.lax.erf_inv(jnp.asarray(xs))
    out["erf_inv_f32"] = {"x_bits": bits_u32(xs), "y_bits": bits_u32(y)}

    out["randint_i32"] = []
    for key in keys:
        for shape, lo, hi in (((10,), 0, 1000), ((3, 4), -7, 93), ((9,), 0, 1024), ((6,), 5, 5),
                              ((8,), -(2**31), 2**31 - 1)):
            r = jax.random.randint(key, shape, lo, hi, jnp.int32)
            out["randint_i32"].append(
                {"key": key_list(jax, key), "shape": list(shape), "minval": lo, "maxval": hi,
                 "values": [int(v) for v in np.asarray(r).reshape(-1)]}
            )
    return out


def pass_x64():
    import numpy as np

    jax = setup(True)
    import jax.numpy as jnp

    out = {}
    seeds = [{"seed": s, "seed_u64": s % 2**64, "key": key_list(jax, jax.random.PRNGKey(s))} for s in SEEDS]
    seeds += [{"seed": s, "seed_u64": s, "key": key_list(jax, jax.random.PRNGKey(np.uint64(s)))} for s in U64_SEEDS]
    out["seeds_x64"] = seeds

    keys = sample_keys(jax)
    out["uniform_f64"] = []
    out["normal_f64"] = []
    for key in keys[:3]:
        for shape in ((9,), (3, 4)):
            u = jax.random.uniform(key, shape, jnp.float64)
            out["uniform_f64"].append(
                {"key": key_list(jax, key), "shape": list(shape), "minval": 0.0, "maxval": 1.0, "bits": bits_u64(u)}
            )
            n = jax.random.normal(key, shape, jnp.float64)
            out["normal_f64"].append({"key": key_list(jax, key), "shape": list(shape), "bits": bits_u64(n)})
    return out


def main():
    if len(sys.argv) == 2 and sys.argv[1] in ("--x32", "--x64"):
        part = pass_x32() if sys.argv[1] == "--x32" else pass_x64()
        json.dump(part, sys.stdout)
        return

    import jax
    import jaxlib

    data = {
        "about": "jax.random reference vectors made by scripts/make_rng_vectors.py; "
        "keys are [u32, u32] = jax.random.key_data; floats are IEEE bit patterns",
        "jax_version": jax.__version__,
        "jaxlib_version": jaxlib.__version__,
        "jax_threefry_partitionable": True,
        "backend": "cpu",
    }
    for flag in ("--x32", "--x64"):
        res = subprocess.run([sys.executable, os.path.abspath(__file__), flag], check=True, capture_output=True,
                             text=True, env=dict(os.environ, JAX_PLATFORMS="cpu"))
        data.update(json.loads(res.stdout))

    os.makedirs(os.path.dirname(OUT), exist_ok=True)
    with open(OUT, "w") as f:
        json.dump(data, f, separators=(",", ":"))
        f.write("\n")
    print(f"wrote {os.path.normpath(OUT)} ({os.path.getsize(OUT)} bytes, jax {jax.__version__})")


if __name__ == "__main__":
    main()

"""QM9: the 12 standard quantum-chemistry regression targets from features computed offline.

Features need no RDKit: element counts, atom counts and the sorted eigenvalues of the Coulomb
matrix (Rupp et al., PRL 2012), all from the 3-D geometries stored in the CSVs of ``qm9pack``.
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd
from numpy.typing import NDArray

from .base import DATASETS, MultiTaskData
from .pairs import check_count
from .splits import split_indices
from .tabular import TaskSpec, build_tabular, package_file

__all__ = [
    "ANGSTROM_TO_BOHR",
    "ELEMENTS",
    "FEATURE_NAMES",
    "INSTALL_COMMAND",
    "MAX_ATOMS",
    "TARGETS",
    "coulomb_matrix",
    "coulomb_spectra",
    "featurize",
    "qm9",
]

INSTALL_COMMAND = "pip install qm9pack==1.0.3"
_FILES = ("qm9_part1.csv", "qm9_part2.csv", "qm9_part3.csv")
MAX_ATOMS = 29
"""The largest QM9 molecule has 29 atoms (hydrogens included): the length of the eigenvalue vector."""
ANGSTROM_TO_BOHR = 1.0 / 0.529177210903
"""Coordinates are stored in angstrom; the Coulomb matrix uses atomic units (bohr)."""
ELEMENTS: dict[str, int] = {"H": 1, "C": 6, "N": 7, "O": 8, "F": 9}
"""QM9's elements and their nuclear charges."""
TARGETS: dict[str, tuple[str, str]] = {
    "mu": ("Dipole_debye", "dipole moment, debye"),
    "alpha": ("Polarizability_bohr3", "isotropic polarizability, bohr^3"),
    "homo": ("HOMO_au", "HOMO energy, hartree"),
    "lumo": ("LUMO_au", "LUMO energy, hartree"),
    "gap": ("HOMO_LUMO_gap_au", "HOMO-LUMO gap, hartree"),
    "r2": ("R2_bohr2", "electronic spatial extent <R^2>, bohr^2"),
    "zpve": ("ZPVE_au", "zero-point vibrational energy, hartree"),
    "u0": ("InternalEnergy_0K_au", "internal energy at 0 K, hartree"),
    "u": ("InternalEnergy_298K_au", "internal energy at 298.15 K, hartree"),
    "h": ("Enthalphy_298K_au", "enthalpy at 298.15 K, hartree"),
    "g": ("GibbsFreeEnergy_298K_au", "Gibbs free energy at 298.15 K, hartree"),
    "cv": ("Heatcapacity_Cv_cal_mol_K", "heat capacity at 298.15 K, cal/(mol K)"),
}
"""Task name -> (CSV column, quantity and unit). Targets keep the CSV's units."""
FEATURE_NAMES: tuple[str, ...] = (
    *(f"n_{e}" for e in ELEMENTS),
    "n_atoms",
    "n_heavy",
    *(f"cm_eig_{i:02d}" for i in range(MAX_ATOMS)),
)
"""The 36 input columns: 5 element counts, atoms, heavy atoms, 29 Coulomb-matrix eigenvalues."""
_CHUNK = 4096  # molecules per batched eigendecomposition (bounds memory)
_GEOMETRY = ("N_atoms", "Stoichiometry", "Elements", "XYZ_Ang")


def coulomb_matrix(charges: NDArray[np.float64], coords: NDArray[np.float64]) -> NDArray[np.float64]:
    """The Coulomb matrices ``[..., n, n]`` of molecules with ``charges [..., n]`` and ``coords [..., n, 3]``.

    ``M_ii = 0.5 Z_i^2.4`` and ``M_ij = Z_i Z_j / |R_i - R_j|`` (Rupp et al. 2012); coordinates in
    the unit the caller wants the matrix in (bohr for :func:`featurize`).
    """
    z = np.asarray(charges, dtype=np.float64)
    r = np.asarray(coords, dtype=np.float64)
    dist = np.zeros(r.shape[:-1] + r.shape[-2:-1], dtype=np.float64)
    for axis in range(r.shape[-1]):  # per coordinate: far faster than a [..., n, n, 3] difference array
        c = r[..., axis]
        d = c[..., :, None] - c[..., None, :]
        d *= d
        dist += d
    np.sqrt(dist, out=dist)
    diag = np.arange(z.shape[-1])
    dist[..., diag, diag] = 1.0
    m = z[..., :, None] * z[..., None, :]
    m /= dist
    m[..., diag, diag] = 0.5 * z**2.4
    return m


def coulomb_spectra(charges: NDArray[np.float64], coords: NDArray[np.float64]) -> NDArray[np.float64]:
    """Eigenvalues ``[..., n]`` of the Coulomb matrices, sorted by decreasing absolute value."""
    ev: NDArray[np.float64] = np.asarray(np.linalg.eigvalsh(coulomb_matrix(charges, coords)), dtype=np.float64)
    order = np.argsort(-np.abs(ev), axis=-1, kind="stable")
    return np.take_along_axis(ev, order, axis=-1)


def featurize(
    n_atoms: NDArray[np.int64], symbols: Sequence[str] | NDArray[np.str_], coords: NDArray[np.float64]
) -> NDArray[np.float64]:
    """The ``[M, 36]`` feature matrix (:data:`FEATURE_NAMES`) of ``M`` molecules.

    Args:
        n_atoms: ``[M]`` atoms per molecule (hydrogens included), 1 to :data:`MAX_ATOMS`.
        symbols: the element symbols of all atoms, molecule after molecule (``sum(n_atoms)``).
        coords: ``[sum(n_atoms), 3]`` Cartesian coordinates in angstrom.

    Returns:
        Per molecule: counts of H, C, N, O, F; the number of atoms and of heavy (non-H) atoms; the
        eigenvalues of the Coulomb matrix in atomic units (bohr), sorted by decreasing absolute
        value and padded with zeros to :data:`MAX_ATOMS`. Molecules are processed in batches of
        equal size, so 130,831 molecules take a few seconds.
    """
    n_atoms = np.asarray(n_atoms, dtype=np.int64)
    total = int(n_atoms.sum())
    coords = np.asarray(coords, dtype=np.float64).reshape(-1, 3)
    if len(symbols) != total or len(coords) != total:
        raise ValueError(
            f"{len(n_atoms)} molecules with {total} atoms in all, but {len(symbols)} element symbols "
            f"and {len(coords)} coordinate triples"
        )
    if n_atoms.size and (n_atoms.min() < 1 or n_atoms.max() > MAX_ATOMS):
        raise ValueError(f"atoms per molecule must lie in 1..{MAX_ATOMS}; got {n_atoms.min()}..{n_atoms.max()}")
    codes = pd.Index(list(ELEMENTS)).get_indexer(pd.Index(np.asarray(symbols, dtype=object)))
    if (codes < 0).any():
        bad = sorted({str(s) for s, c in zip(symbols, codes, strict=True) if c < 0})
        raise ValueError(f"unknown element symbols {bad}; QM9 holds only {list(ELEMENTS)}")
    charges = np.asarray(list(ELEMENTS.values()), dtype=np.float64)[codes]
    molecule = np.repeat(np.arange(len(n_atoms)), n_atoms)
    counts = np.zeros((len(n_atoms), len(ELEMENTS)), dtype=np.float64)
    np.add.at(counts, (molecule, codes), 1.0)
    spectra = np.zeros((len(n_atoms), MAX_ATOMS), dtype=np.float64)
    starts = np.concatenate([[0], np.cumsum(n_atoms)[:-1]]).astype(np.int64)
    bohr = coords * ANGSTROM_TO_BOHR
    for n in np.unique(n_atoms):
        same = np.nonzero(n_atoms == n)[0]
        for lo in range(0, len(same), _CHUNK):
            mols = same[lo : lo + _CHUNK]
            atoms = starts[mols][:, None] + np.arange(n)[None, :]  # [m, n]
            spectra[mols, :n] = coulomb_spectra(charges[atoms], bohr[atoms])
    size = n_atoms.astype(np.float64)[:, None]
    return np.concatenate([counts, size, size - counts[:, :1], spectra], axis=1)


def _numbers(cells: pd.Series, what: str) -> NDArray[np.float64]:
    """All numbers of a column of bracketed lists like ``"[[0.1,-2e-3,1],[...]]"``, flattened."""
    text = ",".join(cells.astype(str).tolist())
    text = text.translate(str.maketrans("", "", "[]()")).replace("*^", "e")
    lines = io.StringIO(text.replace(",", "\n"))
    try:
        values = pd.read_csv(lines, header=None, dtype=np.float64, skipinitialspace=True, skip_blank_lines=True)
    except ValueError as e:
        raise ValueError(f"QM9 column {what!r} holds a value that is not a number: {e}") from None
    return values.iloc[:, 0].to_numpy(dtype=np.float64)


def _symbols(cells: pd.Series) -> list[str]:
    """All element symbols of a column like ``"['C','H','H']"``, flattened."""
    text = ",".join(cells.astype(str).tolist())
    text = text.translate(str.maketrans("", "", "[]'\" \t"))
    return [s for s in text.split(",") if s]


def _read(paths: Sequence[Path]) -> pd.DataFrame:
    wanted = ["Index", *_GEOMETRY, *(col for col, _ in TARGETS.values())]
    frames = []
    for path in paths:
        header = [str(c) for c in pd.read_csv(path, nrows=0).columns]
        missing = [c for c in wanted if c not in header]
        if missing:
            raise ValueError(f"QM9 file {str(path)!r} lacks the columns {missing}; it has {header}")
        frames.append(pd.read_csv(path, usecols=wanted))
    df = pd.concat(frames, ignore_index=True)
    if not df["Index"].is_unique:
        raise ValueError("the QM9 files repeat molecule indices; reinstall with: " + INSTALL_COMMAND)
    return df


@DATASETS.register("qm9")
def qm9(
    *,
    subset: int | None = 20_000,
    split_seed: int = 0,
    val_fraction: float = 0.1,
    test_fraction: float = 0.1,
) -> MultiTaskData:
    """QM9 molecules, 12 regression targets from composition and Coulomb-matrix features (needs qm9pack).

    Ramakrishnan et al. (Scientific Data 2014): 130,831 small organic molecules (up to 9 heavy
    atoms C, N, O, F) with DFT (B3LYP/6-31G(2df,p)) properties. Read from the CSVs shipped in
    ``qm9pack==1.0.3`` (``qm9pack/data/qm9_part{1,2,3}.csv``, located but never imported).

    Tasks, all regression and in the CSV's units: ``mu`` (debye), ``alpha`` (bohr^3), ``homo``,
    ``lumo``, ``gap`` (hartree), ``r2`` (bohr^2), ``zpve``, ``u0``, ``u``, ``h``, ``g`` (hartree),
    ``cv`` (cal/(mol K)); each is standardised with the training mean and standard deviation.

    Inputs (36, standardised with training statistics): counts of H, C, N, O and F atoms, the
    number of atoms and of heavy atoms, and the 29 eigenvalues of the Coulomb matrix computed from
    the stored 3-D geometry (atomic units), sorted by decreasing absolute value and zero-padded.

    Args:
        subset: a seeded random subset of this many molecules (drawn with ``split_seed``) is split
            into train/val/test; None uses all 130,831.
        split_seed: seed of the subset and of the split.
        val_fraction: fraction of the molecules for validation.
        test_fraction: fraction of the molecules for test.
    """
    check_count("subset", subset, 10, None)
    paths = [package_file("qm9pack", "data", f, install=INSTALL_COMMAND) for f in _FILES]
    df = _read(paths)
    available = len(df)
    if subset is not None and subset < len(df):
        keep = np.sort(np.random.default_rng([split_seed, 17]).choice(len(df), size=subset, replace=False))
        df = df.iloc[keep].reset_index(drop=True)
    n_atoms = df["N_atoms"].to_numpy(dtype=np.int64)
    coords = _numbers(df["XYZ_Ang"], "XYZ_Ang")
    if len(coords) != 3 * int(n_atoms.sum()):
        raise ValueError(
            f"QM9 column 'XYZ_Ang' holds {len(coords)} numbers for {int(n_atoms.sum())} atoms; expected 3 per atom"
        )
    x = featurize(n_atoms, _symbols(df["Elements"]), coords.reshape(-1, 3))
    # the file's own formula [H, C, N, O, F] must agree with the parsed element symbols
    formula = _numbers(df["Stoichiometry"], "Stoichiometry")
    if formula.shape != (5 * len(df),) or not np.array_equal(formula.reshape(-1, 5), x[:, : len(ELEMENTS)]):
        raise ValueError("QM9 columns 'Elements' and 'Stoichiometry' disagree; the files may be damaged")
    table = pd.DataFrame(x, columns=list(FEATURE_NAMES))
    for task, (column, _) in TARGETS.items():
        table[task] = df[column].to_numpy(dtype=np.float64)
    splits = split_indices(len(table), seed=split_seed, val_fraction=val_fraction, test_fraction=test_fraction)
    return build_tabular(
        table,
        [TaskSpec(task, "regression", None) for task in TARGETS],
        splits,
        features=list(FEATURE_NAMES),
        name="qm9",
        info={
            "source": "QM9 (Ramakrishnan et al. 2014), CSVs qm9pack/data/qm9_part{1,2,3}.csv of qm9pack==1.0.3",
            "source_files": [str(p) for p in paths],
            "license": "QM9 data (Ramakrishnan et al. 2014, figshare): CC0 1.0; qm9pack package: MIT",
            "targets": {task: {"column": col, "unit": unit} for task, (col, unit) in TARGETS.items()},
            "molecules": {"available": available, "used": len(table)},
            "split": {
                "split_seed": split_seed,
                "val_fraction": val_fraction,
                "test_fraction": test_fraction,
                "subset": subset,
            },
        },
    )

"""Re-indexing: the same trained weights with more cases in the catalog and the case index
(cases that radiologists corrected), without retraining."""

from __future__ import annotations

from collections import Counter

import faiss
import numpy as np
import pandas as pd

from model.cases import CaseSet, case_table
from model.catalog import EXACT_BELOW, CaseIndex, CaseIndexSpec, Catalog, choose_case_index
from model.checkpoint import Checkpoint
from model.encoders import TextTokenCache
from model.train import embed_cases, embed_texts


def stored_vectors(index: faiss.Index) -> np.ndarray:
    """Every vector an index holds, in id order."""
    try:
        return index.reconstruct_n(0, index.ntotal)
    except RuntimeError:  # an IVF index keeps no id -> list map until asked to
        ivf = faiss.extract_index_ivf(index)
        ivf.make_direct_map()
        return index.reconstruct_n(0, index.ntotal)


def with_added_cases(
    base: Checkpoint,
    cases: CaseSet,
    origin: str,
    case_index: str = "auto",
    case_index_exact_below: int = EXACT_BELOW,
    text_encoder: str = "",
) -> Checkpoint:
    """`base` with `cases` added to its catalog (new texts, higher counts) and case index.

    `origin` is the folder of the checkpoint as trained; it is kept in the new one's metadata
    so re-indexing again starts from the trained catalog, not from an earlier re-index. The
    case index kind is chosen again for the new size (`case_index`: "auto" or a kind).
    `text_encoder` is the service's setting for the encoder's folder (empty: where it was).
    """
    if len(cases) and cases.slices(0).shape[1] != base.config.feature_dim:
        raise ValueError(
            f"the added cases have {cases.slices(0).shape[1]} features per slice; the model "
            f"takes {base.config.feature_dim}"
        )
    model, schema = base.model, base.schema
    texts = cases.texts()
    added = Counter(texts)
    new_texts = [t for t in dict.fromkeys(texts) if t not in set(base.catalog.texts)]
    counts = base.catalog.counts.copy()
    row_of = {t: i for i, t in enumerate(base.catalog.texts)}
    for t, n in added.items():
        if t in row_of:
            counts[row_of[t]] += n
    embeddings = base.catalog.embeddings
    labels = base.catalog.labels
    if new_texts:
        cache = TextTokenCache(base.text_encoder(text_encoder), new_texts)
        embeddings = np.vstack([embeddings, embed_texts(model, cache, new_texts)])
        labels = np.vstack([labels, np.stack([schema.parse(t) for t in new_texts])])
        counts = np.concatenate([counts, [added[t] for t in new_texts]])
    catalog = Catalog.build([*base.catalog.texts, *new_texts], labels, counts, embeddings)

    if cases.schema != schema:
        raise ValueError(
            f"the added cases are read with schema {cases.schema.name!r}, not the "
            f"model's {schema.name!r}"
        )
    table = pd.concat([base.cases.cases, case_table(cases).astype(str)], ignore_index=True)
    case_vectors = np.vstack([stored_vectors(base.cases.index), embed_cases(model, cases)])
    kind = choose_case_index(len(table), case_index, case_index_exact_below)
    cases_index = CaseIndex.build(table, case_vectors, CaseIndexSpec(kind=kind))

    meta = {
        **base.meta,
        "reindexed_from": base.meta.get("reindexed_from") or origin,
        "added_case_ids": [str(c) for c in cases.case_ids],
    }
    return Checkpoint(
        model,
        schema,
        meta,
        catalog,
        cases_index,
        dict(base.zero_shot),
        base.outlines,
        base.served,
    )

"""The search engine: where a search request's ranking happens, with no database round trip.

Plain Python + NumPy/FAISS (no Django):
- ``kinds``     which FAISS index a catalog of n vectors gets (flat / IVF with an HNSW coarse
                quantizer / IVF-PQ) and how it is built; ids inside FAISS are row numbers.
- ``columns``   the per-image arrays beside the vectors (image -> product, active, category,
                price) and the shopper filters evaluated on them as a row mask.
- ``snapshot``  the on-disk base: a versioned, checksummed folder of files that every serving
                process on the machine memory-maps read-only (one copy in the page cache).
- ``segments``  the base segment (mmapped snapshot + this process's tombstones) and the small
                in-memory delta of changes since the snapshot.
- ``store``     base + delta together: the query planner (filters inside the index search,
                exact over a selective filter's rows, wider probing for a loose one), grouping
                image hits into products, merging segments.

Django glue (reads the database):
- ``changes``   the change log (IndexChange rows) as batches of image/product changes.
- ``live``      a serving process's store kept in step with the change log and snapshots;
                building a new base from the database (what compaction does).
- ``fulltext``  word search over every product (an embedded full-text index kept in step).
"""

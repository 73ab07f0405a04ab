"""The deliberate-bug check: each protection, switched off, must make the suite fail.

    python benchmarks/mutants.py            # every mutant (about 20 minutes on 2 cores)
    python benchmarks/mutants.py NAME ...   # only these
    make mutants

Each mutant is one small patch (an exact piece of source and its replacement)
applied to a scratch copy of the repository; the tests named with it then run
there, and must fail. A mutant whose tests pass is a protection no test
guards: the script prints the table, writes benchmarks/results/mutants.json
and exits 1. Add a mutant with every guarantee you add.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


@dataclass(frozen=True)
class Mutant:
    name: str
    file: str
    old: str
    new: str
    tests: tuple[str, ...]
    why: str


MUTANTS = [
    # -- crash recovery (versioning.py) ------------------------------------------------
    Mutant("recovery off", "memstore/versioning.py",
           '        committed = head.lance_versions if head else {}\n',
           '        return\n        committed = head.lance_versions if head else {}\n',
           ("tests/test_crash.py",), "a killed writer's Lance commits are adopted by the next write"),
    Mutant("no recovery before a write", "memstore/versioning.py",
           "        head = self._recover(self.head())\n",
           "        head = self.head()\n",
           ("tests/test_crash.py",), "only the failing process rolls back; a killed one never does"),
    Mutant("a rollback not named in head.json", "memstore/versioning.py",
           "        if restored:\n            head = replace(",
           "        if False:\n            head = replace(",
           ("tests/test_crash.py::test_a_recovered_memory_is_not_recovered_again_by_every_open",),
           "after a killed writer, every open takes the lock and restores the tables again"),
    Mutant("cleanup keeps only the latest Lance version", "memstore/versioning.py",
           "            keep = {ds.version, named.get(name, ds.version)}\n",
           "            keep = {ds.version}\n",
           ("tests/test_forget.py",), "a forget after a rolled-back write deletes the head's versions"),
    Mutant("cleanup before the forget commits", "memstore/forget.py",
           '        lap("select")\n        erase(tx, ids)\n',
           '        store.cleanup(None)\n        lap("select")\n        erase(tx, ids)\n',
           ("tests/test_forget.py",), "the old bug: cleanup from under the committed head"),
    Mutant("head.json not compared with the audit", "memstore/versioning.py",
           "        if record is not None and audit.version < (record.audit_lance_version or 0):\n",
           "        if False:\n",
           ("tests/test_damage.py",), "a lost audit manifest opens silently at an older version"),
    Mutant("lost tables open as a new memory", "memstore/versioning.py",
           "            if record is not None:\n                raise self._damage(f\"{TABLES_DIR}/{AUDIT_TABLE}.lance\"",
           "            if False:\n                raise self._damage(f\"{TABLES_DIR}/{AUDIT_TABLE}.lance\"",
           ("tests/test_damage.py",), "a memory that lost tables/ is re-created empty"),
    Mutant("head's Lance versions not checked", "memstore/versioning.py",
           "            if latest < version:\n", "            if False:\n",
           ("tests/test_damage.py",), "a lost manifest of a committed table version goes unnoticed"),
    Mutant("disk full not recognised", "memstore/versioning.py",
           '    if isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT):\n        return True\n',
           "    return False\n",
           ("tests/test_disk_full.py", "tests/test_forget.py"), "a full disk surfaces as raw Lance/OS errors"),
    Mutant("rows chosen outside the write lock", "memstore/memory.py",
           "        with self._store.lock():\n            return method(self, *args, **kwargs)\n",
           "        return method(self, *args, **kwargs)\n",
           ("tests/test_concurrency.py",), "a writer's SELECT races another's forget"),
    # -- forget (forget.py) --------------------------------------------------------------
    Mutant("no pending-forget record", "memstore/forget.py",
           "        write_pending(store, tx.version, found[\"id\"].to_numpy(), stored, thumbnails)\n", "",
           ("tests/test_crash.py",), "a forget killed after its commit leaves the bytes on disk"),
    Mutant("interrupted forget not finished", "memstore/forget.py",
           "    pending = read_pending(store)\n    if pending is None:\n        return None\n",
           "    return None\n",
           ("tests/test_crash.py",), "the next open does not finish the forget"),
    Mutant("forget's scan off", "memstore/forget.py",
           "    hits, scanned, skipped = find_bytes(store.path,",
           "    return (0, 0), 0, 0\n    hits, scanned, skipped = find_bytes(store.path,",
           ("tests/test_forget.py",), "forget reports success without looking"),
    Mutant("forget rewrites every fragment", "memstore/forget.py",
           "    compact_fragments(store, name, fragments, target_rows=",
           "    compact_fragments(store, name, [f.fragment_id for f in store.dataset(name).get_fragments()], "
           "target_rows=",
           ("tests/test_forget.py",), "a forget of one row merges and rewrites every small fragment"),
    Mutant("forget rewrites every fragment with deletions", "memstore/forget.py",
           "    compact_fragments(store, name, fragments, target_rows=",
           "    compact_fragments(store, name, set(fragments) | {f.fragment_id for f in store.dataset(name)"
           ".get_fragments() if f.deletion_file() is not None}, target_rows=",
           ("tests/test_forget.py",), "after a reweight of 10% of the rows, a forget of one row rewrites every state row"),
    Mutant("the few-vector scan looks for swapped bytes", "memstore/forget.py",
           "                needle = anchor.tobytes()",
           "                needle = anchor.byteswap().tobytes()",
           ("tests/test_forget.py",), "a forget of one row proves nothing: its scan can never find the bytes"),
    Mutant("adds write unbounded fragments", "memstore/memory.py",
           "                                       max_rows_per_file=maintenance.FRAGMENT_ROWS)",
           "                                       )",
           ("tests/test_forget.py",), "one add is one fragment, which a forget of one row rewrites whole"),
    Mutant("every data file counted untouched", "memstore/forget.py",
           "            (held if fragment.fragment_id in fragments else untouched).update(files)",
           "            untouched.update(files)",
           ("tests/test_forget.py",), "the proof skips the very files that held the rows"),
    Mutant("forget imports torch", "memstore/forget.py",
           "steps.\"\"\"\n    from .snapshot import vectors_as_numpy",
           "steps.\"\"\"\n    from .search import vectors_as_numpy",
           ("tests/test_forget.py",), "every erasure request pays 1.5 s of torch import"),
    Mutant("forget's proof ignores thumbnails", "memstore/forget.py",
           "        thumbnails = thumbnails_of(found)\n", "        thumbnails = []\n",
           ("tests/test_thumbnails.py",), "a forgotten image's thumbnail may stay on disk unseen"),
    Mutant("an unfinished forget's record drops its thumbnails", "memstore/forget.py",
           "                    thumbnails=pending.thumbnails)", "                    thumbnails=())",
           ("tests/test_thumbnails.py",), "a forget finished after a crash proves only the vectors gone"),
    Mutant("thumbnails stored compressed", "memstore/thumbnails.py",
           'FIELD_METADATA = {"lance-encoding:compression": "none"}',
           'FIELD_METADATA = {"lance-encoding:compression": "zstd"}',
           ("tests/test_thumbnails.py",), "forget's scan for thumbnail bytes can never find them"),
    # -- damage (check.py) ---------------------------------------------------------------
    Mutant("checksums not compared", "memstore/check.py",
           "        if digest != want:\n", "        if False:\n",
           ("tests/test_damage.py",), "flipped bytes in a data file read back silently"),
    Mutant("damaged memory takes writes", "memstore/check.py",
           "    marker = store.path / DAMAGE_FILE\n    if marker.exists():\n",
           "    marker = store.path / DAMAGE_FILE\n    if False:\n",
           ("tests/test_damage.py",), "a write lands on a memory that failed its check"),
    Mutant("each dataset opened cold", "memstore/versioning.py",
           "version=version,\n                             session=self._session)",
           "version=version)",
           ("tests/test_write_cost.py::test_a_stores_datasets_share_one_cache",),
           "every write loads the state table's id index and manifests again (25 ms against 4 aged)"),
    Mutant("no checksums recorded at commit", "memstore/versioning.py",
           "        self._record_checksums()\n", "",
           ("tests/test_damage.py",), "check() has nothing to compare with"),
    # -- the SQL sandbox (sql.py) -------------------------------------------------------
    Mutant("SQL external access on", "memstore/sql.py",
           '    "enable_external_access": False,', '    "enable_external_access": True,',
           ("tests/test_sql_sandbox.py",), "read_csv('/etc/passwd') and COPY TO work"),
    Mutant("SQL configuration unlocked", "memstore/sql.py",
           '    con.execute("SET lock_configuration = true")\n', "",
           ("tests/test_sql_sandbox.py",), "SQL can SET the sandbox's settings back"),
    Mutant("EXPLAIN ANALYZE of a write allowed", "memstore/sql.py",
           "            kind = inner[0].type if len(inner) == 1 else kind\n",
           "            kind = duckdb.StatementType.SELECT\n",
           ("tests/test_sql_sandbox.py",), "EXPLAIN ANALYZE CREATE OR REPLACE VIEW samples runs"),
    Mutant("every query reads every table", "memstore/sql.py",
           "            con = self._connection(self._view_level(tree), _tables_named(tree))\n",
           "            con = self._connection(self._view_level(tree), None)\n",
           ("tests/test_sql.py",), "a count(*) over samples reads the whole commit log first"),
    # -- memstore serve (server/app.py, cli.py) ---------------------------------------------
    Mutant("a server with tokens serves anyone", "memstore/server/app.py",
           "        if not tokens:\n            return None\n", "        if True:\n            return None\n",
           ("tests/test_server.py",), "a token on the command line protects nothing"),
    Mutant("a diff pairs rows that are not in both versions", "memstore/diff.py",
           "    i = np.flatnonzero(after[j] == before)\n", "    i = np.arange(len(before))\n",
           ("tests/test_diff.py",), "pruned rows vanish from the diff and others count as relabelled"),
    Mutant("take returns the rows in id order, not the order asked", "memstore/snapshot.py",
           '        out = {"id": pa.array(ids, pa.int64())}', '        out = {"id": pa.array(np.sort(ids), pa.int64())}',
           ("tests/test_memory.py", "tests/test_server.py"), "a sorted page shows its rows in the wrong order"),
    Mutant("the overview is cached whatever the head", "memstore/server/app.py",
           "            key = (memories.head.version, mem.version)", "            key = (mem.version is None,)",
           ("tests/test_server.py",), "the page shows counts from before the last write"),
    Mutant("a comment in the condition lifts the page limit", "memstore/server/app.py",
           "                           ).limit(limit).fetchall()", "                           ).fetchall()",
           ("tests/test_server.py",), "GET /api/samples?where=true) -- returns every row of the memory"),
    Mutant("a text column named thumbnail is taken for images", "memstore/thumbnails.py",
           "    return THUMBNAIL_COLUMN in schema.names and (", "    return THUMBNAIL_COLUMN in schema.names or (",
           ("tests/test_server.py",), "a forget of a memory with a URL column 'thumbnail' crashes after its commit"),
    Mutant("pages overwrite a user's column named thumbnail", "memstore/server/app.py",
           "    if not _has_thumbnails(mem):\n        return rows\n", "",
           ("tests/test_server.py",), "the quality page shows None where the user's thumbnail URLs were"),
    Mutant("ragged query vectors reach numpy", "memstore/server/app.py",
           "    dims = {len(v) for v in vectors}\n    if dims != {mem.dim}:",
           "    dims = {len(v) for v in vectors}\n    if not dims:",
           ("tests/test_server_schema.py",), "a request with vectors of two lengths is a 500, not a 400"),
    Mutant("a row id past int64 reaches the memory", "memstore/server/app.py",
           "RowIdPath = Annotated[int, Path(ge=0, le=2**63 - 1, description=\"the row's id\")]",
           "RowIdPath = Annotated[int, Path(description=\"the row's id\")]",
           ("tests/test_server_schema.py",), "GET /api/rows/9223372036854775808/explain is a 500"),
    Mutant("a read-only server forgets", "memstore/server/app.py",
           "    memories = Memories(FilePath(path), writable=allow_writes, encoder=encoder)\n",
           "    memories = Memories(FilePath(path), writable=True, encoder=encoder)\n",
           ("tests/test_server.py",), "anyone who reaches the page erases rows"),
    Mutant("serve listens on every address without a token", "memstore/cli.py",
           "    if not tokens and not is_loopback(host):\n", "    if False:\n",
           ("tests/test_server.py",), "--host 0.0.0.0 publishes the memory to the network, unprotected"),
    Mutant("the page loads from a CDN", "memstore/server/static/index.html",
           '<script src="/static/app.js"></script>',
           '<script src="https://cdn.jsdelivr.net/npm/d3@7"></script><script src="/static/app.js"></script>',
           ("tests/test_browser.py",), "the page breaks offline and tells a third party who looks at it"),
    Mutant("request bodies unbounded", "memstore/server/app.py",
           "(not length.isdigit() or int(length) > MAX_BODY_BYTES)", "False",
           ("tests/test_server.py",), "a client posts gigabytes"),
    Mutant("server writes audited as the login", "memstore/versioning.py",
           "    if _AUDIT_USER.get() is not None:\n", "    if False:\n",
           ("tests/test_server.py",), "the audit cannot tell which token forgot a row"),
    Mutant("explain by id counts the row itself", "memstore/heads/knn.py",
           "            return self._searcher.search(self._vectors[positions], k, exclude=positions)\n",
           "            return self._searcher.search(self._vectors[positions], k)\n",
           ("tests/test_server.py",), "a row explains itself: its own vote, at distance 0, decides"),
    # -- readers (stale.py) ----------------------------------------------------------------
    Mutant("readers do not re-read after a forget", "memstore/stale.py",
           "                if lost is None or isinstance(exc, (CorruptMemoryError, StaleVersionError)):\n",
           "                if True:\n",
           ("tests/test_concurrency.py",), "readers fail with raw Lance errors during a forget"),
    # -- indexed search (search.py) ------------------------------------------------------
    Mutant("indexed search keeps dead hits", "memstore/search.py",
           "            keep &= self.ids[at] == hit_ids\n", "",
           ("tests/test_index.py",), "pruned rows found by the index are mapped onto wrong live ids"),
    # -- a memory that stays fast (optimize.py) ----------------------------------------------
    Mutant("writes never merge fragments", "memstore/versioning.py",
           "        maintain(self)\n", "",
           ("tests/test_optimize.py",), "every small write leaves fragments that no one merges"),
    Mutant("writes never clean up Lance versions", "memstore/versioning.py",
           "            cleanup_if_needed(self.store, new)\n", "",
           ("tests/test_optimize.py",), "old Lance versions pile up until a forget"),
    Mutant("optimize merges nothing", "memstore/optimize.py",
           "    target = target_rows or FRAGMENT_ROWS\n",
           "    return\n    target = target_rows or FRAGMENT_ROWS\n",
           ("tests/test_optimize.py",), "optimize reports success and leaves every fragment"),
    Mutant("dead checksum rows kept", "memstore/optimize.py",
           "    if CHECKSUMS_TABLE not in store.table_names():\n        return\n",
           "    return\n",
           ("tests/test_optimize.py",), "the checksums table grows by a row per file ever written"),
    Mutant("no id index", "memstore/optimize.py",
           '            dataset.create_scalar_index("id", "BTREE", name=ID_INDEX_NAME)\n',
           "            pass\n",
           ("tests/test_write_cost.py",), "every reweight and forget scans every id the memory ever held"),
    Mutant("id index never brought up to date", "memstore/optimize.py",
           "    if (reuse and rebuild) or outside >= max(ID_INDEX_ROWS, inside // 8):\n",
           "    if reuse and rebuild:\n",
           ("tests/test_write_cost.py",), "rows appended after the index was built are scanned for ever"),
    Mutant("write merges move indexed state rows", "memstore/optimize.py",
           "        if not _mergeable(fragment, target) or fragment.fragment_id in indexed:\n",
           "        if not _mergeable(fragment, target):\n",
           ("tests/test_write_cost.py",),
           "every merge adds to Lance's fragment-reuse index, which every later read applies (37 ms vs 7)"),
    Mutant("adjacent groups compacted together", "memstore/optimize.py",
           "            if position[group[0]] > end + 1:  # not next to the group before it\n",
           "            if True:\n",
           ("tests/test_forget.py::test_forgets_keep_every_fragment_within_the_bound",
            "tests/test_optimize.py::test_merges_keep_every_fragment_within_the_bound"),
           "Lance writes adjacent candidates as one fragment: fragments, and forgets, grow past the bound"),
    Mutant("compaction groups ignore the bound", "memstore/optimize.py",
           " or (run and run_rows + rows > target_rows):\n",
           ":\n",
           ("tests/test_forget.py::test_forgets_keep_every_fragment_within_the_bound",
            "tests/test_optimize.py::test_merges_keep_every_fragment_within_the_bound"),
           "a run of adjacent small fragments is merged into one larger than FRAGMENT_ROWS"),
    Mutant("fragment-reuse index kept after a rebuild", "memstore/optimize.py",
           '            dataset.drop_index(index["name"])\n',
           "            pass\n",
           ("tests/test_write_cost.py",), "reads keep applying a reuse index that serves no index"),
    Mutant("a forget's reuse index never folded", "memstore/optimize.py",
           "    if (reuse and rebuild) or outside",
           "    if False or outside",
           ("tests/test_write_cost.py",), "after a forget every read applies its fragment-reuse index"),
    Mutant("a forget rebuilds the id index", "memstore/forget.py",
           "        tx.rebuild_id_index = False  # 1.4 s",
           "        tx.rebuild_id_index = True  # 1.4 s",
           ("tests/test_write_cost.py",), "a forget of one row at 10M rows pays a rebuild of the id index (+1.4 s)"),
    Mutant("a small write reads every state row", "memstore/snapshot.py",
           '        if not self.has_samples or len(ids) > STATE_OF_MAX_IDS or "state" in self.__dict__:\n',
           "        if True:\n",
           ("tests/test_write_cost.py",), "a reweight of 10 rows reads the state of the whole memory"),
    Mutant("a small change closes every open row", "memstore/intervals.py",
           'where=f"id IN ({listed}) AND valid_to IS NULL"',
           'where="valid_to IS NULL"',
           ("tests/test_write_cost.py",), "a reweight of a few rows ends the intervals of every row"),
    Mutant("len() of an old version is the head's", "memstore/memory.py",
           "        if self.version == self._head.version:\n            return self._head.rows_total",
           "        if True:\n            return self._head.rows_total",
           ("tests/test_optimize.py",), "mem.at(3) reports as many rows as the head"),
    Mutant("a write's merge bounded by Lance", "memstore/optimize.py",
           "    compact_fragments(store, name, chosen, target_rows=target, defer_index_remap=name in ID_INDEXED_TABLES)\n",
           "    dataset.optimize.compact_files(target_rows_per_fragment=target, max_source_rows=source_rows,\n"
           "                                   defer_index_remap=name in ID_INDEXED_TABLES)\n",
           ("tests/test_optimize.py",), "a large fragment with deletions stops every merge: a fragment a write"),
    # -- import torchvision (torchvision_compat.py) ------------------------------------------
    Mutant("no torchvision import hook", "memstore/__init__.py",
           "_install_import_hook()\n", "",
           ("tests/test_torchvision_compat.py",), "from transformers import GPT2LMHeadModel fails after import memstore"),
    # -- ResMem and RAC (heads/resmem.py, heads/rac.py) ------------------------------------------
    Mutant("ResMem weights exp(-d*sigma)", "memstore/heads/resmem.py",
           "    logw = -dist.astype(np.float64) / sigma\n", "    logw = -dist.astype(np.float64) * sigma\n",
           ("tests/test_resmem_oracle.py",), "σ acts inverted: a small σ no longer means near rows dominate"),
    Mutant("ResMem temperature multiplied", "memstore/heads/resmem.py",
           "            return _softmax(out / self.temperature), feats\n",
           "            return _softmax(out * self.temperature), feats\n",
           ("tests/test_resmem_oracle.py",), "softmax(f(x)·T): base and residuals tempered the wrong way"),
    Mutant("ResMem residual sign flipped", "memstore/heads/resmem.py",
           "            residual = np.eye(n_classes, dtype=np.float32)[y] - pred\n",
           "            residual = pred - np.eye(n_classes, dtype=np.float32)[y]\n",
           ("tests/test_resmem_oracle.py",), "the memory pushes away from the training labels"),
    Mutant("ResMem score_grid ignores k", "memstore/heads/resmem.py",
           "_weights(dist[:, :kk], s), pos[:, :kk]", "_weights(dist, s), pos",
           ("tests/test_resmem_oracle.py",), "every k of the grid scores the largest k"),
    Mutant("ResMem leaves the caller's model in eval mode", "memstore/heads/resmem.py",
           "        model.train(was_training)\n", "",
           ("tests/test_resmem.py",), "fit switches off the dropout of a model the caller is training"),
    Mutant("RAC logit-adjustment sign flipped", "memstore/heads/rac.py",
           "loss = nn.functional.cross_entropy(logits + adjust, y[idx])",
           "loss = nn.functional.cross_entropy(logits - adjust, y[idx])",
           ("tests/test_rac_oracle.py",), "the loss favours the frequent classes instead of the rare ones"),
    Mutant("RAC logit adjustment without the log", "memstore/heads/rac.py",
           "np.log(np.maximum(prior, 1e-12))", "np.maximum(prior, 1e-12)",
           ("tests/test_rac_oracle.py",), "τ·π, not τ·log π: a near-constant shift, no long-tail correction"),
    Mutant("RAC base branch not normalised", "memstore/heads/rac.py",
           "return self.log_scale.exp() / 2 * nn.functional.normalize(self.base(x).float(), dim=1)",
           "return self.log_scale.exp() / 2 * self.base(x).float()",
           ("tests/test_rac_oracle.py",), "the branch with the larger logits dominates the fusion"),
    Mutant("RAC fusion without the 1/2", "memstore/heads/rac.py",
           "return self.log_scale.exp() / 2 * nn.functional.normalize(self.retrieval(tokens, distances), dim=1)",
           "return self.log_scale.exp() * nn.functional.normalize(self.retrieval(tokens, distances), dim=1)",
           ("tests/test_rac_oracle.py",), "the retrieval branch weighs L, the base L/2"),
    Mutant("RAC training rows find themselves", "memstore/heads/rac.py",
           "dist, pos = self._neighbours(X, queries, exclude)", "dist, pos = self._neighbours(X, queries)",
           ("tests/test_rac_oracle.py",), "memory_ids ignored: the retrieval branch learns to copy the row's label"),
    # -- kNN-LM (heads/knnlm.py) ---------------------------------------------------------------
    Mutant("kNN-LM λ and 1-λ swapped", "memstore/heads/knnlm.py",
           "return torch.logaddexp(knn + math.log(lmbda), lm + math.log1p(-lmbda))",
           "return torch.logaddexp(knn + math.log1p(-lmbda), lm + math.log(lmbda))",
           ("tests/test_knnlm_oracle.py",), "p_kNN weighs 1-λ: invisible at the λ = 0.5 of test_knnlm.py"),
    Mutant("kNN-LM perplexity multiplies by T", "memstore/heads/knnlm.py",
           "w = torch.log_softmax(-dist[:, :kk].double() / t, dim=1)",
           "w = torch.log_softmax(-dist[:, :kk].double() * t, dim=1)",
           ("tests/test_knnlm_oracle.py",), "exp(-d T) in perplexity(): it shares its code with perplexity_grid()"),
    Mutant("kNN-LM small λ short-cut to the base LM", "memstore/heads/knnlm.py",
           "    if lmbda == 0.0:\n        return lm\n", "    if lmbda < 0.01:\n        return lm\n",
           ("tests/test_knnlm_oracle.py",), "λ = 1e-3 ignores the datastore; λ = 0 passes the shortcut either way"),
    Mutant("kNN-LM mixing drops 1-λ", "memstore/heads/knnlm.py",
           "lm + math.log1p(-lmbda))", "lm)",
           ("tests/test_knnlm_oracle.py",), "log(λ p_kNN + p_LM): a mixing bug the λ = 0 shortcut hides"),
    Mutant("kNN-LM weights exp(+d/T)", "memstore/heads/knnlm.py",
           "return torch.log_softmax(-dist.double() / self.temperature, dim=1)",
           "return torch.log_softmax(dist.double() / self.temperature, dim=1)",
           ("tests/test_knnlm_oracle.py",), "the farthest of the k neighbours weighs most in log_probs"),
    Mutant("kNN-LM perplexity weights exp(+d/T)", "memstore/heads/knnlm.py",
           "w = torch.log_softmax(-dist[:, :kk]", "w = torch.log_softmax(dist[:, :kk]",
           ("tests/test_knnlm_oracle.py",), "the farthest of the k neighbours weighs most in perplexity()"),
    Mutant("kNN-LM log_probs multiplies by T", "memstore/heads/knnlm.py",
           "return torch.log_softmax(-dist.double() / self.temperature, dim=1)",
           "return torch.log_softmax(-dist.double() * self.temperature, dim=1)",
           ("tests/test_knnlm_oracle.py",), "exp(-d T) in log_probs, explain and generation"),
    Mutant("kNN-LM p_kNN not normalised", "memstore/heads/knnlm.py",
           "return torch.log_softmax(-dist.double() / self.temperature, dim=1)",
           "return -dist.double() / self.temperature",
           ("tests/test_knnlm_oracle.py",), "p_kNN = Σ exp(-d/T) without its normaliser: no distribution"),
    Mutant("kNN-LM neighbours sharing a token not summed", "memstore/heads/knnlm.py",
           "probs.scatter_add_(1, self.values[pos], weights)", "probs.scatter_(1, self.values[pos], weights)",
           ("tests/test_knnlm_oracle.py",), "p_kNN(y) keeps one neighbour's weight, not Σ_i 1[y = v_i] of them"),
    Mutant("kNN-LM metric ignored", "memstore/heads/knnlm.py",
           "self.searcher = mem.searcher(metric, index, k=k)", 'self.searcher = mem.searcher("l2", index, k=k)',
           ("tests/test_knnlm_oracle.py",), "metric='cosine' searches by squared euclidean distance"),
    Mutant("kNN-LM generation reads the first position's key", "memstore/heads/knnlm.py",
           "keys = self.knnlm.keyed.last_keys[:, -1]", "keys = self.knnlm.keyed.last_keys[:, 0]",
           ("tests/test_knnlm_oracle.py",), "model.generate mixes in the neighbours of the prompt's first token"),
    # -- estimator contract (heads/base.py) -------------------------------------------------
    Mutant("head parameters not validated at fit", "memstore/heads/base.py",
           "        validate_params(self._parameter_constraints, self.get_params(deep=False), type(self).__name__)\n",
           "", ("tests/test_estimator_contract.py",), "voting='majority' or lr=-1 reach the maths"),
    Mutant("scikit-learn's parameter error not translated", "memstore/heads/base.py",
           "            raise parameter_error(name, value, constraints[name]) from exc\n", "            raise\n",
           ("tests/test_estimator_contract.py",), "a bad parameter raises no InvalidInputError (no MemstoreError)"),
    Mutant("ResMem's fitted check removed", "memstore/heads/resmem.py",
           '    _fitted_attributes = ("memory_",)\n', "    _fitted_attributes = ()\n",
           ("tests/test_estimator_contract.py",), "an unfitted ResMem fails with AttributeError, not NotFittedError"),
    Mutant("RAC's width/heads rule not checked", "memstore/heads/rac.py",
           "        if self.width % self.heads:\n", "        if False:\n",
           ("tests/test_estimator_contract.py",), "torch's assertion deep in the transformer, not the fix"),
    Mutant("KNNClassifier's arrays not checked", "memstore/heads/knn.py",
           "            vectors, y = validate_data(self, X, y, dtype=np.float32)\n",
           "            vectors, y = np.asarray(X, dtype=np.float32), np.asarray(y)\n",
           ("tests/test_estimator_contract.py",), "NaN, empty or 2-d y fit silently"),
    Mutant("KNNLM's declared rules not checked", "memstore/heads/knnlm.py",
           'validate_params(self._parameter_constraints, {"k": k', '(self._parameter_constraints, {"k": k',
           ("tests/test_estimator_contract.py",), "lmbda=1.5 or temperature=0 build a kNN-LM"),
    # -- start-up (cli.py, __init__.py) ---------------------------------------------------------
    Mutant("cli imports the API at the top", "memstore/cli.py",
           "import memstore\n\nfrom .errors import MemstoreError\n",
           "import memstore\nfrom memstore.memory import Memory  # noqa: F401\n\nfrom .errors import MemstoreError\n",
           ("tests/test_startup.py",), "memstore --help loads lancedb and duckdb: seconds before the help prints"),
    Mutant("import memstore loads the memory", "memstore/__init__.py",
           '_LAZY = {"open": "memstore.memory", "Memory": "memstore.memory", "WriteResult": "memstore.memory",\n',
           'from .memory import Memory, WriteResult, open  # noqa: E402\n\n_LAZY = {\n',
           ("tests/test_startup.py",), "import memstore (and every CLI call) imports lancedb, duckdb and pyarrow"),
]


def scratch_copy() -> Path:
    """The tracked and untracked-but-not-ignored files of the repository, in a temporary folder."""
    dest = Path(tempfile.mkdtemp(prefix="memstore-mutant-"))
    files = subprocess.run(["git", "ls-files", "-co", "--exclude-standard"], cwd=ROOT,
                           capture_output=True, text=True, check=True).stdout.splitlines()
    for rel in files:
        src = ROOT / rel
        if src.is_file():
            (dest / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dest / rel)
    # the package ships migrations/ as memstore.migrations (pyproject's package-dir)
    (dest / "memstore" / "migrations").symlink_to(dest / "migrations")
    return dest


def run_mutant(mutant: Mutant, python: str) -> dict:
    scratch = scratch_copy()
    try:
        target = scratch / mutant.file
        source = target.read_text()
        count = source.count(mutant.old)
        if count != 1:
            return {"name": mutant.name, "result": f"patch does not apply ({count} matches)", "seconds": 0}
        target.write_text(source.replace(mutant.old, mutant.new))
        env = {**os.environ, "PYTHONPATH": str(scratch)}
        where = subprocess.run([python, "-c", "import memstore; print(memstore.__file__)"], cwd=scratch,
                               env=env, capture_output=True, text=True).stdout.strip()
        if not where.startswith(str(scratch)):
            return {"name": mutant.name, "result": f"scratch copy not imported ({where})", "seconds": 0}
        start = time.perf_counter()
        done = subprocess.run([python, "-m", "pytest", "-q", "-x", "-p", "no:cacheprovider", *mutant.tests],
                              cwd=scratch, env=env, capture_output=True, text=True)
        seconds = round(time.perf_counter() - start, 1)
        last = (done.stdout.strip().splitlines() or [""])[-1]
        return {"name": mutant.name, "file": mutant.file, "tests": list(mutant.tests), "why": mutant.why,
                "result": "caught" if done.returncode != 0 else "SURVIVED", "pytest": last, "seconds": seconds}
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def main(names: list[str]) -> int:
    chosen = [m for m in MUTANTS if not names or m.name in names]
    unknown = set(names) - {m.name for m in chosen}
    if unknown:
        raise SystemExit(f"unknown mutant(s) {sorted(unknown)}; known: {[m.name for m in MUTANTS]}")
    rows = []
    for mutant in chosen:
        row = run_mutant(mutant, sys.executable)
        rows.append(row)
        print(f"{row['result']:>9}  {row['seconds']:>6}s  {mutant.name}  ({row.get('pytest', '')})", flush=True)
    out = ROOT / "benchmarks" / "results" / "mutants.json"
    out.parent.mkdir(exist_ok=True)
    if not names:
        out.write_text(json.dumps(rows, indent=1) + "\n")
    caught = sum(r["result"] == "caught" for r in rows)
    print(f"\n{caught} of {len(rows)} deliberate bugs caught")
    return 0 if caught == len(rows) else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

"""Unit tests of the benchmark's pure parts (no cluster): `cd hack && python3 -m
unittest bench.test_pure`."""

import json
import tempfile
import unittest
from pathlib import Path

from .cluster import as_stored, json_documents, mismatches, summarize
from .report import render_any, scaling_across, summary
from .synthetic import generate


class FieldByField(unittest.TestCase):
    def test_defaults_and_quantities_are_not_differences(self):
        desired = {"spec": {"memory": "0.125Gi", "ports": [{"port": 80}]}, "status": {}, "ts": None}
        live = {"spec": {"memory": "128Mi", "ports": [{"port": 80, "protocol": "TCP"}], "extra": 1}}
        self.assertEqual(mismatches(desired, live), [])

    def test_a_changed_value_is_named(self):
        self.assertEqual(mismatches({"data": {"value": "1"}}, {"data": {"value": "tampered"}}),
                         [".data.value: 'tampered', not '1'"])

    def test_a_missing_item_is_named(self):
        self.assertEqual(len(mismatches({"a": [1, 2]}, {"a": [1]})), 1)

    def test_string_data_is_compared_as_stored(self):
        self.assertEqual(as_stored({"kind": "Secret", "stringData": {"p": "x"}}),
                         {"kind": "Secret", "data": {"p": "eA=="}})

    def test_kubectl_json_of_several_documents(self):
        self.assertEqual(len(json_documents('{"kind":"A"}\n{"kind":"List","items":[{"kind":"B"},{"kind":"C"}]}\n')),
                         3)


class DryRuns(unittest.TestCase):
    def test_a_dry_run_patch_is_not_a_write(self):
        events = [{"verb": "patch", "requestURI": "/api/v1/namespaces/a/configmaps/x?dryRun=All&fieldManager=f",
                   "objectRef": {"resource": "configmaps", "name": "x"}},
                  {"verb": "patch", "requestURI": "/api/v1/namespaces/a/configmaps/x?fieldManager=f",
                   "objectRef": {"resource": "configmaps", "name": "x"}}]
        s = summarize(events)
        self.assertEqual((s["writes"], s["dry_runs"], s["total"]), (1, 1, 2))
        self.assertEqual(s["by_verb_resource"], {"patch configmaps": 1, "patch configmaps (dry run)": 1})


class Layout(unittest.TestCase):
    def test_parts_of_about_a_thousand_objects_after_base(self):
        s = generate(Path(tempfile.mkdtemp()), "t1", 2600, group=1000)
        self.assertEqual(s.parts, ["base", "part-000", "part-001", "part-002"])
        self.assertTrue((s.directory / "base" / "00-namespaces.yaml").exists())
        per_part = {p: sum(1 for f in s.files if f.parts[-3] == p) * 7 for p in s.parts[1:]}
        self.assertTrue(all(900 <= n <= 1010 for n in list(per_part.values())[:-1]), per_part)

    def test_the_default_layout_is_unchanged(self):
        s = generate(Path(tempfile.mkdtemp()), "t2", 100)
        self.assertEqual(s.parts, [])
        self.assertTrue((s.directory / "00-namespaces.yaml").exists())


class Summary(unittest.TestCase):
    def test_peers_that_finished_per_size(self):
        r = {"finished": ["converge", "kubectl"], "daemons": {"finished": ["converge", "argo"]}}
        meta = {"machine": {}, "versions": {}, "commit": "c", "date": "d"}
        self.assertEqual(summary(r, meta)["peers_finished"], ["argo", "kubectl"])


NOTIFY = {"meta": {"commit": "c", "date": "d"},
          "notify": {"objects": 100, "edits_per_mode": 2, "rounds": 1,
                     **{m: {"p50_ms": 10.0, "p99_ms": 20.0, "max_ms": 20.0, "samples": 2}
                        for m in ("none", "healthy", "hanging")},
                     "ratios": {f"{m}_over_none_{k}": 1.0 for m in ("healthy", "hanging") for k in ("p50", "p99")}}}


class OtherModes(unittest.TestCase):
    """`report` over bench/results/*.json: a notify run has no `sizes`."""

    def test_a_notify_file_renders_its_own_table(self):
        self.assertIn("| receiver that never answers |", render_any(NOTIFY))

    def test_a_file_of_no_known_shape_is_not_rendered(self):
        self.assertIsNone(render_any({"meta": {}, "relist": {}}))

    def test_scaling_skips_a_notify_file_and_names_it(self):
        d = Path(tempfile.mkdtemp())
        (d / "a-notify.json").write_text(json.dumps(NOTIFY))
        (d / "b.json").write_text(json.dumps({"meta": {}, "sizes": {"200": {}}}))
        notes = []
        lines = scaling_across([d / "a-notify.json", d / "b.json"], note=notes.append)
        self.assertEqual(lines, ["- 200 objects: `b.json`", ""])
        self.assertEqual(len(notes), 1)
        self.assertIn("a-notify.json: not a results file of sizes (it has `notify`)", notes[0])


if __name__ == "__main__":
    unittest.main()

"""Unit tests of the benchmark's pure parts (no cluster): `cd hack && python3 -m
unittest bench.test_pure`."""

import tempfile
import unittest
from pathlib import Path

from .cluster import as_stored, json_documents, mismatches, summarize
from .report import summary
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


if __name__ == "__main__":
    unittest.main()

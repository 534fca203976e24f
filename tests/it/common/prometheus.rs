//! The Prometheus text the daemon serves on `/metrics` (OpenMetrics): every line
//! checked, and samples read by name and labels.

/// One sample line: `name{k="v",…} value`.
pub struct Sample<'a> {
    /// `name{labels}` as written, for prefix matches.
    pub series: &'a str,
    pub name: &'a str,
    labels: Vec<(&'a str, &'a str)>,
    pub value: f64,
}

impl<'a> Sample<'a> {
    /// The value of label `key`, unquoted.
    pub fn label(&self, key: &str) -> Option<&'a str> {
        self.labels.iter().find(|(k, _)| *k == key).map(|(_, v)| *v)
    }
}

/// The samples of an exposition; panics on a line that is neither a comment nor a
/// well-formed sample.
pub fn samples(text: &str) -> Vec<Sample<'_>> {
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .map(sample)
        .collect()
}

fn sample(line: &str) -> Sample<'_> {
    let (series, value) = line
        .rsplit_once(' ')
        .unwrap_or_else(|| panic!("no value in {line:?}"));
    let value = value
        .parse::<f64>()
        .unwrap_or_else(|_| panic!("bad value in {line:?}"));
    let (name, labels) = match series.split_once('{') {
        Some((name, rest)) => {
            let labels = rest.strip_suffix('}');
            (
                name,
                labels.unwrap_or_else(|| panic!("unclosed in {line:?}")),
            )
        }
        None => (series, ""),
    };
    let name_ok = name.starts_with(|c: char| c.is_ascii_alphabetic() || c == '_')
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':');
    assert!(name_ok, "bad metric name in {line:?}");
    let labels = labels
        .split(',')
        .filter(|p| !p.is_empty())
        .map(|pair| label(pair, line))
        .collect();
    Sample {
        series,
        name,
        labels,
        value,
    }
}

fn label<'a>(pair: &'a str, line: &str) -> (&'a str, &'a str) {
    let (key, quoted) = pair
        .split_once('=')
        .unwrap_or_else(|| panic!("label is not key=value in {line:?}"));
    let value = quoted
        .strip_prefix('"')
        .and_then(|q| q.strip_suffix('"'))
        .filter(|_| !key.is_empty())
        .unwrap_or_else(|| panic!("bad label in {line:?}"));
    (key, value)
}

/// A whole exposition: typed metrics, well-formed samples, the OpenMetrics EOF marker.
pub fn assert_valid(text: &str) {
    assert!(text.contains("# TYPE"), "no TYPE lines:\n{text}");
    assert!(text.ends_with("# EOF\n"), "no EOF marker:\n{text}");
    samples(text);
}

/// The sum of the samples whose series starts with `prefix`
/// (e.g. `converge_api_requests_total{verb="get"}`).
pub fn sum(text: &str, prefix: &str) -> f64 {
    samples(text)
        .iter()
        .filter(|s| s.series.starts_with(prefix))
        .map(|s| s.value)
        .sum()
}

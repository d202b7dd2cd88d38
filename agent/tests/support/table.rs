//! The reliability suite's summary table.

/// One row of the summary table.
#[derive(Debug, Clone)]
pub struct Row {
    pub scenario: String,
    pub faults: String,
    pub recovered: String,
    pub lost: String,
    pub result: String,
}

pub fn table(rows: &[Row], header: &str) -> String {
    let cols = [
        "scenario",
        "faults injected",
        "recovered",
        "fragments lost",
        "result",
    ];
    let cells: Vec<[String; 5]> = rows
        .iter()
        .map(|r| {
            [
                r.scenario.clone(),
                r.faults.clone(),
                r.recovered.clone(),
                r.lost.clone(),
                r.result.clone(),
            ]
        })
        .collect();
    let mut width = cols.map(str::len);
    for c in &cells {
        for (w, s) in width.iter_mut().zip(c) {
            *w = (*w).max(s.chars().count());
        }
    }
    let line = |c: &[String]| {
        let parts: Vec<String> = c
            .iter()
            .zip(width)
            .map(|(s, w)| format!("{s:<w$}"))
            .collect();
        format!("| {} |\n", parts.join(" | "))
    };
    let mut out = format!("{header}\n");
    out += &line(&cols.map(str::to_owned));
    out += &line(&width.map(|w| "-".repeat(w)));
    for c in &cells {
        out += &line(c);
    }
    out
}

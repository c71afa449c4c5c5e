//! Text tables for the CLI: every column as wide as its widest cell, so
//! the columns line up whatever the routes, sizes or dates are; and the
//! tables of `pitstop components` and `pitstop versions`.

use serde_json::Value;

/// How a column's cells sit in its width.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Align {
    /// Text: names, routes, dates.
    Left,
    /// Numbers: versions, sizes.
    Right,
}

/// `rows` under `header`, columns separated by two spaces, no trailing
/// blanks. A row with fewer cells than the header leaves the rest empty.
pub fn render(header: &[(&str, Align)], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = header.iter().map(|(title, _)| title.chars().count()).collect();
    for row in rows {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.chars().count());
        }
    }
    let titles: Vec<String> = header.iter().map(|(title, _)| title.to_string()).collect();
    let mut out = String::new();
    for row in std::iter::once(&titles).chain(rows) {
        let mut line = String::new();
        for (i, ((_, align), width)) in header.iter().zip(&widths).enumerate() {
            let cell = row.get(i).map_or("", String::as_str);
            let pad = width - cell.chars().count().min(*width);
            if i > 0 {
                line.push_str("  ");
            }
            match align {
                Align::Left => {
                    line.push_str(cell);
                    line.extend(std::iter::repeat_n(' ', pad));
                }
                Align::Right => {
                    line.extend(std::iter::repeat_n(' ', pad));
                    line.push_str(cell);
                }
            }
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out.pop();
    out
}

/// `pitstop components`: the admin listing of components as a table.
pub fn components_table(list: &Value) -> String {
    let header = [
        ("NAME", Align::Left),
        ("VERSION", Align::Right),
        ("ROUTES", Align::Left),
        ("SIZE", Align::Right),
        ("DEPLOYED", Align::Left),
        ("DIGEST", Align::Left),
        ("CANARY", Align::Left),
    ];
    let rows: Vec<Vec<String>> = (list.as_array().into_iter().flatten())
        .map(|c| {
            let routes: Vec<&str> =
                c["routes"].as_array().into_iter().flatten().filter_map(Value::as_str).collect();
            vec![
                text(&c["name"]),
                text(&c["version"]),
                if routes.is_empty() { "-".to_string() } else { routes.join(",") },
                text(&c["size"]),
                text(&c["deployed_at"]),
                short_digest(&c["digest"]),
                match &c["canary"] {
                    Value::Object(canary) => {
                        format!("v{} at {}%", text(&canary["version"]), text(&canary["percent"]))
                    }
                    _ => "-".to_string(),
                },
            ]
        })
        .collect();
    render(&header, &rows)
}

/// `pitstop versions NAME`: a version history as a table.
pub fn versions_table(answer: &Value) -> String {
    let header = [
        ("VERSION", Align::Right),
        ("ACTIVE", Align::Left),
        ("SIZE", Align::Right),
        ("DEPLOYED", Align::Left),
        ("DIGEST", Align::Left),
    ];
    let rows: Vec<Vec<String>> = (answer["versions"].as_array().into_iter().flatten())
        .map(|v| {
            vec![
                text(&v["version"]),
                if v["version"] == answer["active"] { "*" } else { "" }.to_string(),
                text(&v["size"]),
                text(&v["deployed_at"]),
                short_digest(&v["digest"]),
            ]
        })
        .collect();
    let table = render(&header, &rows);
    match answer["active"].is_null() {
        true => format!(
            "{table}\n{} is undeployed; `pitstop activate {} VERSION` serves a version again",
            text(&answer["name"]),
            text(&answer["name"])
        ),
        false => table,
    }
}

/// A JSON value as a table cell: a string without its quotes, `?` when absent.
fn text(value: &Value) -> String {
    match value {
        Value::String(s) => s.clone(),
        Value::Null => "?".to_string(),
        other => other.to_string(),
    }
}

/// The first 12 hex digits of a digest, enough to tell versions apart.
fn short_digest(digest: &Value) -> String {
    digest.as_str().and_then(|d| d.get(..12)).unwrap_or("?").to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn columns_line_up_with_their_widest_cell() {
        let header = [("NAME", Align::Left), ("SIZE", Align::Right), ("ROUTES", Align::Left)];
        let rows = vec![
            vec!["user".to_string(), "123456".to_string(), "/users".to_string()],
            vec!["a-long-name".to_string(), "7".to_string(), "/a,/b".to_string()],
        ];
        assert_eq!(
            render(&header, &rows),
            "NAME           SIZE  ROUTES\n\
             user         123456  /users\n\
             a-long-name       7  /a,/b"
        );
    }
}

//! Text tables for the CLI: every column as wide as its widest cell, so
//! the columns line up whatever the routes, sizes or dates are.

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

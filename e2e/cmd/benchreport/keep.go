package main

import (
	"fmt"
	"io"
	"strconv"
	"strings"
)

const timeLayout = "2006-01-02 15:04 MST"

// parseReport reads the results back from a report render wrote. Rows of reports written
// before rows carried their own date get the report's date, prefixed "by", since that is all
// that is known of them.
func parseReport(r io.Reader) ([]result, error) {
	var (
		out     []result
		pkg     string
		written string
		inAll   bool
	)
	sc := lineScanner(r)
	for sc.Scan() {
		line := sc.Text()
		switch {
		case strings.HasPrefix(line, "Written by "):
			if i := strings.LastIndex(line, "` on "); i >= 0 {
				written, _, _ = strings.Cut(line[i+len("` on "):], ";")
				written = strings.TrimSuffix(written, ".")
			}
		case line == "## All results":
			inAll = true
		case strings.HasPrefix(line, "## "):
			inAll = false
		case inAll && strings.HasPrefix(line, "### "):
			pkg = strings.TrimPrefix(line, "### ")
		case inAll && strings.HasPrefix(line, "| ") && !strings.HasPrefix(line, "| benchmark |"):
			res, err := parseRow(line, written)
			if err != nil {
				return nil, err
			}
			res.pkg = pkg
			out = append(out, res)
		}
	}
	return out, sc.Err()
}

// parseRow reads "| name | [measured |] iterations | v unit, v unit |".
func parseRow(line, written string) (result, error) {
	cells := strings.Split(strings.Trim(line, "| "), " | ")
	if len(cells) != 3 && len(cells) != 4 {
		return result{}, fmt.Errorf("result row %q: want 3 or 4 cells", line)
	}
	res := result{name: "Benchmark" + cells[0], measured: "by " + written}
	if len(cells) == 4 {
		res.measured = cells[1]
		cells = []string{cells[0], cells[2], cells[3]}
	}
	iters, err := strconv.Atoi(cells[1])
	if err != nil {
		return result{}, fmt.Errorf("result row %q: iterations: %w", line, err)
	}
	res.iters = iters
	for part := range strings.SplitSeq(cells[2], ", ") {
		value, unit, ok := strings.Cut(part, " ")
		v, err := strconv.ParseFloat(value, 64)
		if !ok || err != nil {
			return result{}, fmt.Errorf("result row %q: number %q", line, part)
		}
		res.metrics = append(res.metrics, metric{v, unit})
	}
	return res, nil
}

// merge keeps each previous result this run did not measure again, in its place; a result
// this run measured replaces it, and new ones follow in the order they ran.
func merge(previous, current []result) []result {
	key := func(r result) string { return r.pkg + " " + r.name }
	fresh := map[string]result{}
	for _, r := range current {
		fresh[key(r)] = r
	}
	var out []result
	for _, r := range previous {
		if c, ok := fresh[key(r)]; ok {
			out = append(out, c)
			delete(fresh, key(r))
			continue
		}
		out = append(out, r)
	}
	for _, r := range current {
		if _, ok := fresh[key(r)]; ok {
			out = append(out, r)
		}
	}
	return out
}

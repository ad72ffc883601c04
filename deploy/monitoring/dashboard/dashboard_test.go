package dashboard

import (
	"testing"
)

// TestLayout: panel ids are 1..N in order, every panel fits the 24-column grid without
// overlapping another, has a title, a description and a query, and queries the datasource
// variable.
func TestLayout(t *testing.T) {
	d, err := Build()
	if err != nil {
		t.Fatal(err)
	}
	if d.Uid == nil || *d.Uid != UID {
		t.Errorf("uid %v, want %s", d.Uid, UID)
	}
	type cell struct{ x, y uint32 }
	taken := map[cell]string{}
	panels := 0
	for i, p := range d.Panels {
		want := uint32(i + 1)
		if r := p.RowPanel; r != nil {
			if r.Id != want {
				t.Errorf("row %d: id %d, want %d", i, r.Id, want)
			}
			continue
		}
		panels++
		pa := p.Panel
		title := ""
		if pa.Title != nil {
			title = *pa.Title
		}
		if title == "" || pa.Description == nil || *pa.Description == "" {
			t.Errorf("panel %d: title %q, description %v: want both", i, title, pa.Description)
		}
		if pa.Id == nil || *pa.Id != want {
			t.Errorf("panel %q: id %v, want %d", title, pa.Id, want)
		}
		if pa.Datasource == nil || pa.Datasource.Uid == nil || *pa.Datasource.Uid != "${datasource}" {
			t.Errorf("panel %q: datasource %+v, want the variable ${datasource}", title, pa.Datasource)
		}
		g := pa.GridPos
		if g == nil || g.W == 0 || g.H == 0 || g.X+g.W > 24 {
			t.Errorf("panel %q: gridPos %+v outside the 24-column grid", title, g)
			continue
		}
		for x := g.X; x < g.X+g.W; x++ {
			for y := g.Y; y < g.Y+g.H; y++ {
				if other, ok := taken[cell{x, y}]; ok {
					t.Fatalf("panel %q overlaps %q at (%d,%d)", title, other, x, y)
				}
				taken[cell{x, y}] = title
			}
		}
		if len(pa.Targets) == 0 {
			t.Errorf("panel %q: no query", title)
		}
	}
	if panels < 30 {
		t.Errorf("%d panels, want the 30 or more of rows()", panels)
	}
}

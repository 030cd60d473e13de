package nacos

import (
	"context"
	"fmt"
	"math/rand/v2"
	"slices"
	"strings"
	"testing"

	"github.com/nacos-group/nacos-sdk-go/v2/clients/naming_client"
	nacosmodel "github.com/nacos-group/nacos-sdk-go/v2/model"
	"github.com/nacos-group/nacos-sdk-go/v2/vo"
)

// pagingServer is a service list served the ways Nacos-protocol servers page it.
type pagingServer struct {
	naming_client.INamingClient // only GetAllServicesInfo is called
	names                       []string
	maxPage                     int  // the largest page it serves, 0 for no limit
	shuffle                     bool // orders the list anew for every request, as Polaris does
	zeroCount                   bool // reports a count of 0, as some servers get it wrong
	ignorePaging                bool // serves the first page whatever page is asked for
	requests                    int
}

func (s *pagingServer) GetAllServicesInfo(p vo.GetAllServiceInfoParam) (nacosmodel.ServiceList, error) {
	s.requests++
	names := slices.Clone(s.names)
	if s.shuffle {
		rand.Shuffle(len(names), func(i, j int) { names[i], names[j] = names[j], names[i] })
	}
	size := int(p.PageSize)
	if s.maxPage > 0 {
		size = min(size, s.maxPage)
	}
	from := min(len(names), (int(p.PageNo)-1)*size)
	if s.ignorePaging {
		from = 0
	}
	count := int64(len(names))
	if s.zeroCount {
		count = 0
	}
	return nacosmodel.ServiceList{Count: count, Doms: names[from:min(len(names), from+size)]}, nil
}

func TestListGroupIsCompleteOrFails(t *testing.T) {
	services := func(n int) []string {
		out := make([]string, n)
		for i := range out {
			out[i] = fmt.Sprintf("svc-%05d", i)
		}
		return out
	}
	for _, tc := range []struct {
		name     string
		server   pagingServer
		wantErr  string
		requests int
	}{
		{name: "one page", server: pagingServer{names: services(10), shuffle: true}, requests: 1},
		{name: "pages in a new order each time, no page limit", server: pagingServer{names: services(1700), shuffle: true}, requests: 2},
		{name: "page limit, stable order", server: pagingServer{names: services(1200), maxPage: 500}, requests: 5},
		{name: "page limit, exactly full pages", server: pagingServer{names: services(1000), maxPage: 500}, requests: 5},
		{name: "page limit, pages in a new order each time", server: pagingServer{names: services(1200), maxPage: 500, shuffle: true},
			wantErr: "pages of the service list overlap"},
		// The last page of 5 is likely all on the first page too: still not a complete list.
		{name: "page limit, small last page, new order each time", server: pagingServer{names: services(505), maxPage: 500, shuffle: true},
			wantErr: "pages of the service list overlap"},
		{name: "page limit below the whole-list page, count 0", server: pagingServer{names: services(1500), maxPage: 800, zeroCount: true}, requests: 6},
		{name: "page limit, paging ignored, count 0", server: pagingServer{names: services(500), maxPage: 500, ignorePaging: true, zeroCount: true}, requests: 4},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := listGroup(context.Background(), &tc.server, "ns", "g")
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("listGroup = %d names, %v; want an error with %q", len(got), err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			slices.Sort(got)
			if !slices.Equal(got, tc.server.names) {
				t.Errorf("listed %d services, want all %d", len(got), len(tc.server.names))
			}
			if tc.server.requests != tc.requests {
				t.Errorf("%d requests, want %d", tc.server.requests, tc.requests)
			}
		})
	}
}

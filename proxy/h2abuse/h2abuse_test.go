package h2abuse

import (
	"strings"
	"testing"
	"time"
)

// TestCounterEarnedControlFrames plays a connection's frames as a script:
// c a control frame, r a RST_STREAM, p a frame that earns one (sent
// HEADERS or DATA), o a stream the peer opened, w the window passing. want is the
// index of the first frame judged a flood, or -1.
func TestCounterEarnedControlFrames(t *testing.T) {
	rep := strings.Repeat
	for _, tc := range []struct {
		name, script string
		want         int
	}{
		{"within the limit", rep("c", 4), -1},
		{"past the limit, nothing earned", rep("c", 5), 4},
		{"BDP pings: one per DATA received", rep("pc", 1000), -1},
		{"pings in bursts after responses", rep("ppppcccc", 100), -1},
		{"reading ACKs is no progress", rep("c", 4) + "c", 4},
		{"earned then spent", "pp" + rep("c", 6) + "c", 8},
		{"a new window forgives", rep("c", 4) + "w" + rep("c", 4), -1},
		{"earned does not carry over", rep("p", 100) + rep("c", 4) + "w" + rep("c", 5), 109},
		{"flood after a window of work", rep("pc", 10) + "w" + rep("c", 4) + "c", 25},
		{"resets past the limit", rep("r", 3) + "r", 3},
		{"resets earn nothing", rep("pr", 3) + "r", 6},
		{"resets and control frames apart", rep("r", 3) + rep("c", 4), -1},
		{"rapid reset: every stream reset", rep("or", 3) + "or", 7},
		{"deadlines: a stream in four reset", rep("oooor", 100), -1},
		{"half the streams reset", rep("oor", 100), -1},
		{"more than half reset", rep("or", 3) + rep("oorr", 10), 9},
		{"opened streams earn control frames", rep("oc", 100), -1},
		{"a new window for resets", rep("r", 3) + "w" + rep("r", 3), -1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			now := time.Unix(0, 0)
			c := NewCounter(3, 4, 10*time.Second, func() time.Time { return now })
			got := -1
			for i, ev := range tc.script {
				var over bool
				switch ev {
				case 'c':
					over = c.Control()
				case 'r':
					over = c.Reset()
				case 'p':
					c.Progress()
				case 'o':
					c.Opened()
				case 'w':
					now = now.Add(10 * time.Second)
				}
				if over {
					got = i
					break
				}
			}
			if got != tc.want {
				t.Errorf("first flood at %d, want %d", got, tc.want)
			}
		})
	}
}

// A limit of 0 or less is no limit.
func TestCounterNoLimit(t *testing.T) {
	c := NewCounter(0, -1, time.Second, nil)
	for range 10000 {
		if c.Control() || c.Reset() {
			t.Fatal("counted against no limit")
		}
	}
}

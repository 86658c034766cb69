// pgx's part of the driver matrix (tests/integration/test_driver_matrix.py builds and runs it): one
// feature per run, with pgx v4 as Debian ships it (golang-github-jackc-pgx-v4-dev) and its defaults.
// pgx sends a statement without arguments through Exec with the simple protocol, and everything else
// as a named statement it prepares once per connection and caches ("lrupsc_1_0", "lrupsc_1_1", ...:
// every connection uses the same names for its own queries). A Batch is pipelined: Parse and Describe
// of every statement, one Sync, then Bind and Execute of every statement, one Sync. CopyFrom uses
// binary COPY after describing the table's columns. With statement_cache_mode=describe (what
// PgBouncer's users set in transaction mode) pgx describes each statement once with the unnamed
// statement (Parse, Describe, Sync) and then runs it as Parse, Bind, Execute, Sync of the unnamed
// statement, never naming one; explicit Prepare still names them.
//
// usage: matrix '{"port":N,"user":"app","password":"app","database":"app","feature":"copy","table":"t","nodes":[...],"cache":"prepare"}'
//
//	feature: copy | cursor | cursor_write | prepared | write_read | listen | cancel | errors
//
// Prints "OK FEATURE" and exits 0, or "FAIL FEATURE at step [...]: message" and exits 1.
// `prepared` also prints "PORTS {"reads":[...],"writes":[...],"txReads":[...]}".
package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/jackc/pgconn"
	"github.com/jackc/pgx/v4"
)

type config struct {
	Port     int    `json:"port"`
	User     string `json:"user"`
	Password string `json:"password"`
	Database string `json:"database"`
	Feature  string `json:"feature"`
	Table    string `json:"table"`
	Nodes    []int  `json:"nodes"`
	Cache    string `json:"cache"` // statement_cache_mode: "prepare" (pgx's default) or "describe"
}

var (
	cfg  config
	T    string
	step = "start"
	bg   = context.Background()
)

type failure struct{ msg string }

// check stops the feature with msg unless ok (recovered in main).
func check(ok bool, format string, args ...interface{}) {
	if !ok {
		panic(failure{fmt.Sprintf("check failed: "+format, args...)})
	}
}

// must stops the feature on an error.
func must(err error) {
	if err != nil {
		panic(failure{describe(err)})
	}
}

func describe(err error) string {
	var pg *pgconn.PgError
	if errors.As(err, &pg) {
		return pg.Code + " " + pg.Message
	}
	return err.Error()
}

func code(err error) string {
	var pg *pgconn.PgError
	if errors.As(err, &pg) {
		return pg.Code
	}
	return ""
}

func expectCode(want string, err error) {
	if err == nil {
		panic(failure{"expected SQLSTATE " + want + ", got no error"})
	}
	if code(err) != want {
		panic(failure{"expected SQLSTATE " + want + ", got " + describe(err)})
	}
}

func connect(port int, user, password, database string) (*pgx.Conn, error) {
	ctx, cancel := context.WithTimeout(bg, 5*time.Second)
	defer cancel()
	dsn := fmt.Sprintf("host=127.0.0.1 port=%d user=%s password=%s dbname=%s sslmode=disable "+
		"connect_timeout=5", port, user, password, database)
	return pgx.Connect(ctx, dsn)
}

func open() *pgx.Conn {
	db := cfg.Database
	if cfg.Cache != "" {
		db += " statement_cache_mode=" + cfg.Cache
	}
	c, err := connect(cfg.Port, cfg.User, cfg.Password, db)
	must(err)
	return c
}

func closeConn(c *pgx.Conn) {
	ctx, cancel := context.WithTimeout(bg, 5*time.Second)
	defer cancel()
	_ = c.Close(ctx)
}

func exec(c *pgx.Conn, sql string, args ...interface{}) {
	_, err := c.Exec(bg, sql, args...)
	must(err)
}

func scalarInt(c *pgx.Conn, sql string, args ...interface{}) int {
	var v int
	must(c.QueryRow(bg, sql, args...).Scan(&v))
	return v
}

func ints(c *pgx.Conn, sql string, args ...interface{}) []int {
	rows, err := c.Query(bg, sql, args...)
	must(err)
	defer rows.Close()
	var out []int
	for rows.Next() {
		var v int
		must(rows.Scan(&v))
		out = append(out, v)
	}
	must(rows.Err())
	return out
}

// named runs the explicitly prepared statement name with text arguments and returns the first column
// of its first row as text. It uses pgconn's ExecPrepared (Bind, Describe, Execute, Sync), because
// pgx v4's Query looks names up only with the default statement cache, not in describe mode.
func named(c *pgx.Conn, name string, args ...interface{}) (string, error) {
	params := make([][]byte, len(args))
	for i, a := range args {
		params[i] = []byte(fmt.Sprint(a))
	}
	res := c.PgConn().ExecPrepared(bg, name, params, nil, nil).Read()
	if res.Err != nil {
		return "", res.Err
	}
	if len(res.Rows) == 0 {
		return "", errors.New("no rows")
	}
	return string(res.Rows[0][0]), nil
}

func mustNamed(c *pgx.Conn, name string, args ...interface{}) string {
	v, err := named(c, name, args...)
	must(err)
	return v
}

func rangeOf(a, b int) []int {
	out := make([]int, 0, b-a+1)
	for i := a; i <= b; i++ {
		out = append(out, i)
	}
	return out
}

func same(x, y []int) bool {
	if len(x) != len(y) {
		return false
	}
	for i := range x {
		if x[i] != y[i] {
			return false
		}
	}
	return true
}

func copyOut(c *pgx.Conn, sql string) string {
	var buf bytes.Buffer
	_, err := c.PgConn().CopyTo(bg, &buf, sql)
	must(err)
	return buf.String()
}

// ---------------------------------------------------------------------------------------------------

func copyFeature() {
	c := open()
	defer closeConn(c)
	rows := make([][]interface{}, 0, 1000)
	var want strings.Builder
	for i := 1; i <= 1000; i++ {
		rows = append(rows, []interface{}{int32(i), fmt.Sprintf("r%d", i)})
		fmt.Fprintf(&want, "%d\tr%d\n", i, i)
	}
	step = "CopyFrom (binary COPY), 1000 rows"
	n, err := c.CopyFrom(bg, pgx.Identifier{T}, []string{"id", "v"}, pgx.CopyFromRows(rows))
	must(err)
	check(n == 1000, "CopyFrom copied %d rows", n)
	step = "COPY of a query to stdout"
	out := copyOut(c, "copy (select id, v from "+T+" order by id) to stdout")
	check(out == want.String(), "copy out gave %d chars", len(out))
	step = "CopyFrom in a transaction"
	tx, err := c.Begin(bg)
	must(err)
	rows = rows[:0]
	for i := 1001; i <= 1100; i++ {
		rows = append(rows, []interface{}{int32(i), fmt.Sprintf("r%d", i)})
	}
	_, err = tx.CopyFrom(bg, pgx.Identifier{T}, []string{"id", "v"}, pgx.CopyFromRows(rows))
	must(err)
	var cnt int
	must(tx.QueryRow(bg, "select count(*) from "+T).Scan(&cnt))
	check(cnt == 1100, "count in the transaction %d", cnt)
	mx := copyOut(c, "copy (select max(id) from "+T+") to stdout")
	check(mx == "1100\n", "copy out max gave %q", mx)
	must(tx.Commit(bg))
	step = "text COPY from stdin, then COPY out of generate_series"
	_, err = c.PgConn().CopyFrom(bg, strings.NewReader("2001\tx\n2002\ty\n"), "copy "+T+" (id, v) from stdin")
	must(err)
	g := strings.Split(copyOut(c, "copy (select g, g * 2 from generate_series(1, 500) g) to stdout"), "\n")
	check(len(g) == 501 && g[499] == "500\t1000", "copy out of generate_series")
}

func cursorFeature() {
	c := open()
	defer closeConn(c)
	tx, err := c.Begin(bg)
	must(err)
	step = "DECLARE c (simple protocol: Exec without arguments)"
	_, err = tx.Exec(bg, "declare c cursor for select g from generate_series(1, 1000) g")
	must(err)
	for k := 0; k < 3; k++ {
		step = fmt.Sprintf("FETCH 100 FROM c (pgx's cached named statement), %d", k+1)
		got := ints(c, "fetch 100 from c")
		check(same(got, rangeOf(100*k+1, 100*k+100)), "FETCH %d gave %d rows", k+1, len(got))
	}
	_, err = tx.Exec(bg, "close c")
	must(err)
	must(tx.Commit(bg))
	step = "a pipelined Batch of reads (Parse/Describe of each, one Sync, then Bind/Execute)"
	b := &pgx.Batch{}
	for k := 0; k < 5; k++ {
		b.Queue("select $1::int * 2", k)
	}
	b.Queue("select count(*) from generate_series(1, $1::int)", 300)
	br := c.SendBatch(bg, b)
	for k := 0; k < 5; k++ {
		var v int
		must(br.QueryRow().Scan(&v))
		check(v == 2*k, "batch result %d gave %d", k, v)
	}
	var n int
	must(br.QueryRow().Scan(&n))
	check(n == 300, "batch count gave %d", n)
	must(br.Close())
	step = "the same Batch again (statements now cached: Bind/Execute only)"
	br = c.SendBatch(bg, b)
	for k := 0; k < 5; k++ {
		var v int
		must(br.QueryRow().Scan(&v))
		check(v == 2*k, "second batch result %d gave %d", k, v)
	}
	must(br.QueryRow().Scan(&n))
	must(br.Close())
	step = "a Batch inside a transaction"
	tx, err = c.Begin(bg)
	must(err)
	br = tx.SendBatch(bg, b)
	for k := 0; k < 6; k++ {
		_, err = br.Exec()
		must(err)
	}
	must(br.Close())
	must(tx.Commit(bg))
}

func cursorWriteFeature() {
	c := open()
	defer closeConn(c)
	step = "DECLARE before the transaction's first write, FETCH after it"
	tx, err := c.Begin(bg)
	must(err)
	_, err = tx.Exec(bg, "declare c2 cursor for select g from generate_series(1, 10) g")
	must(err)
	_, err = tx.Exec(bg, "insert into "+T+" values ($1, $2)", 1, "w")
	must(err)
	got := ints(c, "fetch all from c2")
	check(same(got, rangeOf(1, 10)), "FETCH after the write gave %v", got)
	must(tx.Commit(bg))
}

func preparedFeature() {
	var reads, writes, txReads []int
	a := open()
	defer closeConn(a)
	b := open()
	defer closeConn(b)
	const rsql = "select inet_server_port(), $1::int + 1"
	read := func(c *pgx.Conn, k int, into *[]int) {
		var p, x int
		must(c.QueryRow(bg, rsql, k).Scan(&p, &x))
		check(x == k+1, "read gave %d", x)
		*into = append(*into, p)
	}
	wsql := "insert into " + T + " (id, v) values ($1, $2) returning inet_server_port()"
	write := func(c *pgx.Conn, id int, v string) {
		var p int
		must(c.QueryRow(bg, wsql, id, v).Scan(&p))
		writes = append(writes, p)
	}
	for k := 0; k < 6; k++ {
		step = fmt.Sprintf("a: cached read, execution %d", k+1)
		read(a, k, &reads)
	}
	// b's first cached statement has the same name as a's ("lrupsc_1_0"), for another query; and an
	// explicitly named one, "r", that a prepares too for another query.
	step = "b: its own statements under the same names"
	_, err := b.Prepare(bg, "r", "select $1::text || 'b'")
	must(err)
	_, err = a.Prepare(bg, "r", "select $1::int * 10")
	must(err)
	for k := 0; k < 3; k++ {
		var s string
		must(b.QueryRow(bg, "select $1::text || 'x'", fmt.Sprintf("x%d", k)).Scan(&s))
		check(s == fmt.Sprintf("x%dx", k), "b cached gave %s", s)
		s = mustNamed(b, "r", fmt.Sprintf("y%d", k))
		check(s == fmt.Sprintf("y%db", k), "b r gave %s", s)
		check(mustNamed(a, "r", k) == fmt.Sprint(10*k), "a r")
	}
	step = "a: cached write"
	write(a, 1, "w1")
	for k := 0; k < 6; k++ {
		step = fmt.Sprintf("a: cached read after the write, execution %d", k+1)
		read(a, k, &reads)
	}
	step = "a: transaction read, write, read"
	tx, err := a.Begin(bg)
	must(err)
	read(a, 100, &reads)
	write(a, 2, "w2")
	read(a, 101, &txReads)
	check(mustNamed(a, "r", 7) == "70", "a r in the transaction")
	must(tx.Commit(bg))
	step = "b: transaction read, write, read"
	tx, err = b.Begin(bg)
	must(err)
	s := mustNamed(b, "r", "z")
	check(s == "zb", "b r in the transaction gave %s", s)
	write(b, 3, "w3")
	read(b, 102, &txReads)
	must(tx.Commit(bg))
	for k := 0; k < 3; k++ {
		step = fmt.Sprintf("a and b at the end, %d", k+1)
		read(a, k, &reads)
		s = mustNamed(b, "r", fmt.Sprintf("e%d", k))
		check(s == fmt.Sprintf("e%db", k), "b r gave %s", s)
	}
	step = "DEALLOCATE of an explicit statement, then prepared again"
	must(a.Deallocate(bg, "r"))
	_, err = a.Prepare(bg, "r", "select $1::int * 100")
	must(err)
	check(mustNamed(a, "r", 3) == "300", "a r after DEALLOCATE")
	out, _ := json.Marshal(map[string][]int{"reads": reads, "writes": writes, "txReads": txReads})
	fmt.Println("PORTS " + string(out))
}

// writers clients at once, client j on ids j*1000 + ...: in transaction mode they share backend
// connections, and with them the names of each other's cached statements.
const writers = 3

func writeReadClient(j int) (err error) {
	off := j * 1000
	at := "connect"
	defer func() {
		if r := recover(); r != nil {
			f, ok := r.(failure)
			if !ok {
				panic(r)
			}
			err = fmt.Errorf("client %d at [%s]: %s", j, at, f.msg)
		}
	}()
	c := open()
	defer closeConn(c)
	w := "insert into " + T + " (id, v) values ($1, $2)"
	r := "select v from " + T + " where id = $1"
	u := "update " + T + " set v = $1 where id = $2"
	n := "select count(*) from " + T + " where id between $1 and $2"
	val := func(id int) string {
		var v string
		err := c.QueryRow(bg, r, id).Scan(&v)
		if errors.Is(err, pgx.ErrNoRows) {
			return "<none>"
		}
		must(err)
		return v
	}
	for k := 1; k <= 12; k++ {
		it := fmt.Sprintf("iteration %d: ", k)
		at = it + "write"
		exec(c, w, off+k, fmt.Sprintf("a%d", k))
		at = it + "read after the write (next transaction)"
		got := val(off + k)
		check(got == fmt.Sprintf("a%d", k), "%s gave %s", at, got)
		at = it + "transaction 1 (writes first)"
		tx, err := c.Begin(bg)
		must(err)
		exec(c, w, off+100+k, fmt.Sprintf("b%d", k))
		got = val(off + 100 + k)
		check(got == fmt.Sprintf("b%d", k), "read after the write gave %s", got)
		exec(c, u, fmt.Sprintf("u%d", k), off+100+k)
		got = val(off + 100 + k)
		check(got == fmt.Sprintf("u%d", k), "read after the update gave %s", got)
		must(tx.Commit(bg))
		at = it + "transaction 2 (reads first)"
		tx, err = c.Begin(bg)
		must(err)
		cnt := scalarInt(c, n, off, off+999)
		check(cnt == 3*k-1, "count %d", cnt)
		exec(c, w, off+200+k, fmt.Sprintf("c%d", k))
		got = val(off + 200 + k)
		check(got == fmt.Sprintf("c%d", k), "read after the write gave %s", got)
		must(tx.Commit(bg))
	}
	return nil
}

func writeReadFeature() {
	step = fmt.Sprintf("%d concurrent clients", writers)
	var wg sync.WaitGroup
	errs := make([]error, writers)
	for j := 0; j < writers; j++ {
		wg.Add(1)
		go func(j int) {
			defer wg.Done()
			errs[j] = writeReadClient(j)
		}(j)
	}
	wg.Wait()
	var msgs []string
	for _, e := range errs {
		if e != nil {
			msgs = append(msgs, e.Error())
		}
	}
	check(len(msgs) == 0, "%d of %d clients failed:\n  %s", len(msgs), writers, strings.Join(msgs, "\n  "))
}

func waitNotification(c *pgx.Conn) *pgconn.Notification {
	ctx, cancel := context.WithTimeout(bg, 10*time.Second)
	defer cancel()
	n, err := c.WaitForNotification(ctx)
	must(err)
	return n
}

func listenFeature() {
	ch := "ch_" + T
	l := open()
	defer closeConn(l)
	nt := open()
	defer closeConn(nt)
	step = "LISTEN"
	exec(l, "listen "+ch)
	check(scalarInt(l, "select 41 + 1") == 42, "select after LISTEN")
	step = "NOTIFY from another connection"
	exec(nt, "notify "+ch+", 'one'")
	m := waitNotification(l)
	check(m.Channel == ch && m.Payload == "one", "first notification %s:%s", m.Channel, m.Payload)
	step = "pg_notify in a transaction"
	tx, err := nt.Begin(bg)
	must(err)
	_, err = tx.Exec(bg, "select pg_notify($1, $2)", ch, "two")
	must(err)
	must(tx.Commit(bg))
	m = waitNotification(l)
	check(m.Channel == ch && m.Payload == "two", "second notification %s:%s", m.Channel, m.Payload)
	step = "UNLISTEN *"
	exec(l, "unlisten *")
	check(scalarInt(l, "select $1::int", 7) == 7, "select after UNLISTEN")
}

// waitActive waits until a statement containing tag runs on some node (pg_stat_activity over direct
// superuser connections): PostgreSQL drops a cancel that arrives before the statement started.
func waitActive(tag string) {
	var direct []*pgx.Conn
	for _, port := range cfg.Nodes {
		d, err := connect(port, "postgres", "postgres", "postgres")
		must(err)
		direct = append(direct, d)
	}
	defer func() {
		for _, d := range direct {
			closeConn(d)
		}
	}()
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		for _, d := range direct {
			var n int
			must(d.QueryRow(bg, "select count(*) from pg_stat_activity where state = 'active' "+
				"and pid <> pg_backend_pid() and strpos(query, $1) > 0", tag).Scan(&n))
			if n > 0 {
				return
			}
		}
		time.Sleep(50 * time.Millisecond)
	}
	panic(failure{"the statement tagged " + tag + " never ran within 10 s"})
}

// cancelled runs sql (with args) on c and cancels it with pgconn's CancelRequest (the CancelRequest
// pgx sends; a cancelled context would close the connection instead), again every 500 ms until the
// statement ends (PostgreSQL drops a cancel that arrives while the backend still reads the
// statement's messages).
func cancelled(c *pgx.Conn, sql, tag string, args ...interface{}) {
	done := make(chan error, 1)
	t0 := time.Now()
	go func() {
		_, err := c.Exec(bg, sql+" /* "+tag+" */", args...)
		done <- err
	}()
	waitActive(tag)
	for k := 0; k < 30; k++ {
		ctx, cancel := context.WithTimeout(bg, 5*time.Second)
		must(c.PgConn().CancelRequest(ctx))
		cancel()
		select {
		case err := <-done:
			expectCode("57014", err)
			check(time.Since(t0) < 15*time.Second, "%s was not cancelled in time", sql)
			// A repeated cancel still on its way would hit the next statement (the server
			// signals the backend after the statement ended, as with PostgreSQL reached
			// directly): let it land while the backend is idle, where it is ignored.
			time.Sleep(time.Second)
			return
		case <-time.After(500 * time.Millisecond):
		}
	}
	panic(failure{sql + " was not cancelled"})
}

func cancelFeature() {
	c := open()
	defer closeConn(c)
	step = "cancel of pg_sleep(30) (simple protocol)"
	cancelled(c, "select pg_sleep(30)", "dm-cancel-"+T+"-0")
	check(scalarInt(c, "select 1") == 1, "select after the cancel")
	step = "cancel of pg_sleep($1) (cached named statement)"
	cancelled(c, "select pg_sleep($1)", "dm-cancel-"+T+"-1", 30)
	check(scalarInt(c, "select 1") == 1, "select after the cancel")
	step = "cancel of a long read in a transaction"
	tx, err := c.Begin(bg)
	must(err)
	check(scalarInt(c, "select 2") == 2, "select 2")
	cancelled(c, "select count(*) from generate_series(1, 3000000000)", "dm-cancel-"+T+"-2")
	must(tx.Rollback(bg))
	check(scalarInt(c, "select $1::int", 3) == 3, "select after the rollback")
}

func errorsFeature() {
	c := open()
	defer closeConn(c)
	step = "division by zero in a transaction"
	tx, err := c.Begin(bg)
	must(err)
	check(scalarInt(c, "select 1") == 1, "select 1")
	_, err = c.Exec(bg, "select 1 / $1::int", 0)
	expectCode("22012", err)
	step = "the next statement in the failed transaction"
	_, err = c.Exec(bg, "select 1")
	expectCode("25P02", err)
	must(tx.Rollback(bg))
	check(scalarInt(c, "select 2") == 2, "select after the rollback")
	step = "unique violation after a write"
	tx, err = c.Begin(bg)
	must(err)
	exec(c, "insert into "+T+" values (1, 'gone')")
	_, err = c.Exec(bg, "insert into "+T+" values ($1, $2)", 1, "dup")
	expectCode("23505", err)
	must(tx.Rollback(bg))
	check(scalarInt(c, "select count(*) from "+T+" where id = 1") == 0, "rolled-back row visible")
	step = "savepoint (pgx's nested transaction)"
	tx, err = c.Begin(bg)
	must(err)
	exec(c, "insert into "+T+" values (2, 's2')")
	sp, err := tx.Begin(bg)
	must(err)
	_, err = sp.Exec(bg, "select 1 / 0")
	expectCode("22012", err)
	must(sp.Rollback(bg))
	exec(c, "insert into "+T+" values ($1, $2)", 3, "s3")
	must(tx.Commit(bg))
	step = "named statement failing in a transaction"
	_, err = c.Prepare(bg, "div", "select 10 / $1::int")
	must(err)
	tx, err = c.Begin(bg)
	must(err)
	_, err = named(c, "div", 0)
	expectCode("22012", err)
	must(tx.Rollback(bg))
	check(mustNamed(c, "div", 2) == "5", "div after the rollback")
	step = "syntax error outside a transaction"
	_, err = c.Exec(bg, "selec 1")
	expectCode("42601", err)
	exec(c, "insert into "+T+" values ($1, $2)", 10, "ok")
	var v string
	must(c.QueryRow(bg, "select v from "+T+" where id = $1", 10).Scan(&v))
	check(v == "ok", "row 10 gave %s", v)
}

var features = map[string]func(){
	"copy": copyFeature, "cursor": cursorFeature, "cursor_write": cursorWriteFeature,
	"prepared": preparedFeature, "write_read": writeReadFeature, "listen": listenFeature,
	"cancel": cancelFeature, "errors": errorsFeature,
}

func main() {
	if len(os.Args) != 2 || json.Unmarshal([]byte(os.Args[1]), &cfg) != nil {
		fmt.Fprintln(os.Stderr, "usage: matrix '{\"port\":N,...,\"feature\":\"copy\"}'")
		os.Exit(2)
	}
	T = cfg.Table
	f, ok := features[cfg.Feature]
	if !ok {
		fmt.Fprintln(os.Stderr, "unknown feature "+cfg.Feature)
		os.Exit(2)
	}
	watchdog := time.AfterFunc(60*time.Second, func() {
		fmt.Printf("FAIL %s at step [%s]: no progress within 60 s\n", cfg.Feature, step)
		os.Exit(3)
	})
	defer func() {
		if r := recover(); r != nil {
			f, ok := r.(failure)
			if !ok {
				panic(r)
			}
			fmt.Printf("FAIL %s at step [%s]: %s\n", cfg.Feature, step, f.msg)
			os.Exit(1)
		}
	}()
	f()
	watchdog.Stop()
	fmt.Println("OK " + cfg.Feature)
}

// pgJDBC's part of the driver matrix (tests/integration/test_driver_matrix.py compiles and runs it): one
// feature per run, with the driver's defaults (extended protocol for every statement, prepareThreshold 5:
// a PreparedStatement used 5 times becomes the named server-side statement S_n).
//
// usage: java -cp DIR:/usr/share/java/postgresql.jar MatrixCheck JDBC_URL USER PASSWORD FEATURE TABLE NODE_PORTS
//   NODE_PORTS: the nodes' ports, comma-separated (cancel watches pg_stat_activity there as postgres).
//   FEATURE: copy | cursor | cursor_write | prepared | write_read | listen | cancel | errors
//   TABLE: an existing table (id int primary key, v text), empty; the Python side checks its final rows.
// Prints "OK FEATURE" and exits 0, or "FAIL at step [...]: SQLSTATE message" and exits 1.
// `prepared` also prints "PORTS {"reads":[...],"writes":[...],"txReads":[...]}" (inet_server_port() of
// its reads, writes and in-transaction reads after a write) for the Python side to check the nodes.
import java.io.StringReader;
import java.io.StringWriter;
import java.sql.Connection;
import java.sql.DriverManager;
import java.sql.PreparedStatement;
import java.sql.ResultSet;
import java.sql.SQLException;
import java.sql.Savepoint;
import java.sql.Statement;
import java.util.ArrayList;
import java.util.List;
import java.util.Properties;

import org.postgresql.PGConnection;
import org.postgresql.PGNotification;
import org.postgresql.copy.CopyManager;

public class MatrixCheck {
    static String url, user, password, table;
    static String[] nodePorts;
    static String step = "start";

    static Connection open() throws SQLException {
        Properties p = new Properties();
        p.setProperty("user", user);
        p.setProperty("password", password);
        return DriverManager.getConnection(url, p);
    }

    static void check(boolean ok, String what) throws Exception {
        if (!ok) throw new Exception("check failed: " + what);
    }

    static long one(PreparedStatement ps) throws SQLException {
        try (ResultSet rs = ps.executeQuery()) {
            if (!rs.next()) throw new SQLException("no row");
            return rs.getLong(1);
        }
    }

    static String oneString(PreparedStatement ps) throws SQLException {
        try (ResultSet rs = ps.executeQuery()) {
            if (!rs.next()) return null;
            return rs.getString(1);
        }
    }

    static long one(Connection c, String sql) throws SQLException {
        try (Statement st = c.createStatement(); ResultSet rs = st.executeQuery(sql)) {
            if (!rs.next()) throw new SQLException("no row");
            return rs.getLong(1);
        }
    }

    static List<Integer> ints(ResultSet rs) throws SQLException {
        List<Integer> out = new ArrayList<>();
        while (rs.next()) out.add(rs.getInt(1));
        rs.close();
        return out;
    }

    static List<Integer> range(int from, int to) {
        List<Integer> out = new ArrayList<>();
        for (int i = from; i <= to; i++) out.add(i);
        return out;
    }

    static void expectState(String state, Runnable0 r) throws Exception {
        try {
            r.run();
        } catch (SQLException e) {
            if (!state.equals(e.getSQLState()))
                throw new Exception("expected SQLSTATE " + state + ", got " + e.getSQLState() + ": " + e.getMessage(), e);
            return;
        }
        throw new Exception("expected SQLSTATE " + state + ", got no error");
    }

    interface Runnable0 {
        void run() throws Exception;
    }

    // -----------------------------------------------------------------------------------------------------

    static void copy() throws Exception {
        try (Connection c = open()) {
            CopyManager cm = c.unwrap(PGConnection.class).getCopyAPI();
            StringBuilder sb = new StringBuilder();
            for (int i = 1; i <= 1000; i++) sb.append(i).append('\t').append('r').append(i).append('\n');
            step = "CopyManager.copyIn 1000 rows";
            long n = cm.copyIn("COPY " + table + " (id, v) FROM STDIN", new StringReader(sb.toString()));
            check(n == 1000, "copyIn returned " + n);
            step = "CopyManager.copyOut of a query";
            StringWriter w = new StringWriter();
            cm.copyOut("COPY (SELECT id, v FROM " + table + " ORDER BY id) TO STDOUT", w);
            check(w.toString().equals(sb.toString()), "copyOut gave other rows (" + w.toString().length() + " chars)");
            step = "copyIn in a transaction";
            c.setAutoCommit(false);
            sb.setLength(0);
            for (int i = 1001; i <= 1100; i++) sb.append(i).append('\t').append('r').append(i).append('\n');
            cm.copyIn("COPY " + table + " (id, v) FROM STDIN", new StringReader(sb.toString()));
            step = "count after copyIn in the transaction";
            check(one(c, "SELECT count(*) FROM " + table) == 1100, "count after copyIn");
            step = "copyOut in the transaction";
            w = new StringWriter();
            cm.copyOut("COPY (SELECT max(id) FROM " + table + ") TO STDOUT", w);
            check(w.toString().equals("1100\n"), "copyOut max gave " + w);
            c.commit();
            c.setAutoCommit(true);
            step = "copyIn of text rows, then a query's copyOut";
            cm.copyIn("COPY " + table + " (id, v) FROM STDIN", new StringReader("2001\tx\n2002\ty\n"));
            w = new StringWriter();
            cm.copyOut("COPY (SELECT g, g * 2 FROM generate_series(1, 500) g) TO STDOUT", w);
            String[] lines = w.toString().split("\n");
            check(lines.length == 500 && lines[499].equals("500\t1000"), "copyOut of generate_series");
        }
    }

    static void cursor() throws Exception {
        try (Connection c = open()) {
            c.setAutoCommit(false);
            step = "DECLARE c";
            try (Statement st = c.createStatement()) {
                st.execute("DECLARE c CURSOR FOR SELECT g FROM generate_series(1, 1000) g");
            }
            // The same PreparedStatement 10 times: server-prepared (S_n) from the 5th on.
            try (PreparedStatement f = c.prepareStatement("FETCH 100 FROM c")) {
                for (int k = 0; k < 10; k++) {
                    step = "FETCH 100 FROM c, execution " + (k + 1);
                    List<Integer> got = ints(f.executeQuery());
                    check(got.equals(range(k * 100 + 1, k * 100 + 100)), step + " gave " + got.size() + " rows");
                }
            }
            step = "CLOSE c; COMMIT";
            try (Statement st = c.createStatement()) {
                st.execute("CLOSE c");
            }
            c.commit();
            // setFetchSize in a transaction: a named portal read with Execute row limits.
            try (PreparedStatement ps = c.prepareStatement("SELECT g FROM generate_series(1, ?) g")) {
                ps.setFetchSize(50);
                for (int k = 0; k < 7; k++) {
                    step = "setFetchSize(50) portal, execution " + (k + 1);
                    ps.setInt(1, 1000 + k);
                    List<Integer> got = ints(ps.executeQuery());
                    check(got.equals(range(1, 1000 + k)), step + " gave " + got.size() + " rows");
                }
            }
            c.commit();
        }
    }

    static void cursorWrite() throws Exception {
        try (Connection c = open()) {
            c.setAutoCommit(false);
            step = "DECLARE before the transaction's first write, FETCH after it";
            try (Statement st = c.createStatement()) {
                st.execute("DECLARE c2 CURSOR FOR SELECT g FROM generate_series(1, 10) g");
                st.executeUpdate("INSERT INTO " + table + " VALUES (1, 'w')");
                List<Integer> got = ints(st.executeQuery("FETCH ALL FROM c2"));
                check(got.equals(range(1, 10)), "FETCH after the write gave " + got);
            }
            c.commit();
        }
    }

    static void prepared() throws Exception {
        List<Integer> reads = new ArrayList<>(), writes = new ArrayList<>(), txReads = new ArrayList<>();
        try (Connection a = open(); Connection b = open();
             PreparedStatement r = a.prepareStatement("SELECT inet_server_port(), ?::int + 1");
             PreparedStatement w = a.prepareStatement("INSERT INTO " + table + " (id, v) VALUES (?, ?) RETURNING inet_server_port()");
             PreparedStatement bq = b.prepareStatement("SELECT ?::text || 'b'");
             PreparedStatement bw = b.prepareStatement("INSERT INTO " + table + " (id, v) VALUES (?, ?) RETURNING inet_server_port()");
             PreparedStatement br = b.prepareStatement("SELECT inet_server_port(), ?::int + 1")) {
            class Read {
                void run(PreparedStatement ps, int k, List<Integer> into) throws Exception {
                    ps.setInt(1, k);
                    try (ResultSet rs = ps.executeQuery()) {
                        check(rs.next(), "no row");
                        check(rs.getInt(2) == k + 1, "read gave " + rs.getInt(2));
                        into.add(rs.getInt(1));
                    }
                }
            }
            Read read = new Read();
            for (int k = 0; k < 7; k++) {
                step = "a: prepared read, execution " + (k + 1);
                read.run(r, k, reads);
            }
            // b's S_1 is another query than a's S_1
            for (int k = 0; k < 7; k++) {
                step = "b: prepared select ?::text || 'b', execution " + (k + 1);
                bq.setString(1, "x" + k);
                check(("x" + k + "b").equals(oneString(bq)), step);
            }
            step = "a: prepared write";
            w.setInt(1, 1);
            w.setString(2, "w1");
            writes.add((int) one(w));
            for (int k = 0; k < 7; k++) {
                step = "a: prepared read after the write, execution " + (k + 1);
                read.run(r, k, reads);
            }
            step = "a: transaction read, write, read";
            a.setAutoCommit(false);
            read.run(r, 100, reads);
            w.setInt(1, 2);
            w.setString(2, "w2");
            writes.add((int) one(w));
            read.run(r, 101, txReads);
            a.commit();
            a.setAutoCommit(true);
            step = "b: transaction read, write, read";
            b.setAutoCommit(false);
            bq.setString(1, "z");
            check("zb".equals(oneString(bq)), step);
            bw.setInt(1, 3);
            bw.setString(2, "w3");
            writes.add((int) one(bw));
            read.run(br, 102, txReads);
            b.commit();
            b.setAutoCommit(true);
            for (int k = 0; k < 7; k++) {
                step = "a: prepared read at the end, execution " + (k + 1);
                read.run(r, k, reads);
                step = "b: prepared select at the end, execution " + (k + 1);
                bq.setString(1, "e" + k);
                check(("e" + k + "b").equals(oneString(bq)), step);
            }
        }
        System.out.println("PORTS {\"reads\":" + reads + ",\"writes\":" + writes + ",\"txReads\":" + txReads + "}");
    }

    // WRITERS clients at once (an application's connection pool), client j on ids j*1000 + ...: in transaction
    // mode they share the backend connections, and with them the S_n names of each other's statements.
    static final int WRITERS = 3;

    static void writeRead() throws Exception {
        List<String> errs = java.util.Collections.synchronizedList(new ArrayList<>());
        List<Thread> threads = new ArrayList<>();
        for (int j = 0; j < WRITERS; j++) {
            final int client = j;
            Thread t = new Thread(() -> {
                String[] where = {"connect"};
                try {
                    writeReadClient(client, where);
                } catch (Throwable e) {
                    String state = (e instanceof SQLException) ? ((SQLException) e).getSQLState() + " " : "";
                    errs.add("client " + client + " at step [" + where[0] + "]: " + state + e);
                }
            });
            threads.add(t);
            t.start();
        }
        for (Thread t : threads) t.join(60000);
        step = WRITERS + " concurrent clients";
        check(errs.isEmpty(), errs.size() + " of " + WRITERS + " clients failed:\n  " + String.join("\n  ", errs));
    }

    static void writeReadClient(int client, String[] step) throws Exception {
        int off = client * 1000;
        try (Connection c = open();
             PreparedStatement w = c.prepareStatement("INSERT INTO " + table + " (id, v) VALUES (?, ?)");
             PreparedStatement r = c.prepareStatement("SELECT v FROM " + table + " WHERE id = ?");
             PreparedStatement u = c.prepareStatement("UPDATE " + table + " SET v = ? WHERE id = ?");
             PreparedStatement n = c.prepareStatement("SELECT count(*) FROM " + table + " WHERE id BETWEEN ? AND ?")) {
            for (int k = 1; k <= 12; k++) {
                String it = "iteration " + k + ": ";
                step[0] = it + "autocommit write";
                c.setAutoCommit(true);
                w.setInt(1, off + k);
                w.setString(2, "a" + k);
                w.executeUpdate();
                step[0] = it + "read after the write (next transaction)";
                r.setInt(1, off + k);
                String got = oneString(r);
                check(("a" + k).equals(got), step[0] + " gave " + got);
                // a transaction that writes first
                c.setAutoCommit(false);
                step[0] = it + "transaction 1: write first";
                w.setInt(1, off + 100 + k);
                w.setString(2, "b" + k);
                w.executeUpdate();
                step[0] = it + "transaction 1: read after the write";
                r.setInt(1, off + 100 + k);
                got = oneString(r);
                check(("b" + k).equals(got), step[0] + " gave " + got);
                step[0] = it + "transaction 1: update";
                u.setString(1, "u" + k);
                u.setInt(2, off + 100 + k);
                u.executeUpdate();
                step[0] = it + "transaction 1: read after the update";
                got = oneString(r);
                check(("u" + k).equals(got), step[0] + " gave " + got);
                step[0] = it + "transaction 1: commit";
                c.commit();
                // a transaction that reads first
                step[0] = it + "transaction 2: read first";
                n.setInt(1, off);
                n.setInt(2, off + 999);
                long cnt = one(n);
                check(cnt == 3L * k - 1, step[0] + " gave " + cnt);
                step[0] = it + "transaction 2: write";
                w.setInt(1, off + 200 + k);
                w.setString(2, "c" + k);
                w.executeUpdate();
                step[0] = it + "transaction 2: read after the write";
                r.setInt(1, off + 200 + k);
                got = oneString(r);
                check(("c" + k).equals(got), step[0] + " gave " + got);
                step[0] = it + "transaction 2: commit";
                c.commit();
            }
        }
    }

    static void listen() throws Exception {
        String ch = "ch_" + table;
        try (Connection l = open(); Connection n = open()) {
            PGConnection pl = l.unwrap(PGConnection.class);
            step = "LISTEN";
            try (Statement st = l.createStatement()) {
                st.execute("LISTEN " + ch);
                check(one(l, "SELECT 41 + 1") == 42, "select after LISTEN");
            }
            step = "NOTIFY from another connection";
            try (Statement st = n.createStatement()) {
                st.execute("NOTIFY " + ch + ", 'one'");
            }
            step = "getNotifications (first)";
            List<String> got = new ArrayList<>();
            long deadline = System.currentTimeMillis() + 10000;
            while (got.size() < 1 && System.currentTimeMillis() < deadline) {
                PGNotification[] ns = pl.getNotifications(500);
                if (ns != null) for (PGNotification x : ns) got.add(x.getName() + ":" + x.getParameter());
            }
            check(got.size() == 1, "first notification not delivered within 10 s: " + got);
            step = "pg_notify in a transaction";
            n.setAutoCommit(false);
            try (PreparedStatement ps = n.prepareStatement("SELECT pg_notify(?, ?)")) {
                ps.setString(1, ch);
                ps.setString(2, "two");
                ps.executeQuery().close();
            }
            n.commit();
            step = "getNotifications (second)";
            deadline = System.currentTimeMillis() + 10000;
            while (got.size() < 2 && System.currentTimeMillis() < deadline) {
                PGNotification[] ns = pl.getNotifications(500);
                if (ns != null) for (PGNotification x : ns) got.add(x.getName() + ":" + x.getParameter());
            }
            check(got.equals(List.of(ch + ":one", ch + ":two")), "notifications: " + got);
            step = "UNLISTEN *";
            try (Statement st = l.createStatement()) {
                st.execute("UNLISTEN *");
            }
            check(one(l, "SELECT 7") == 7, "select after UNLISTEN");
        }
    }

    // Wait until a statement containing tag runs on some node (pg_stat_activity over direct superuser
    // connections), then cancel it until it ends: PostgreSQL itself drops a cancel that arrives
    // before the statement's execution started.
    static Thread cancelWhenActive(Statement st, String tag, List<String> errs) {
        Thread t = new Thread(() -> {
            try {
                long deadline = System.currentTimeMillis() + 10000;
                Properties p = new Properties();
                p.setProperty("user", "postgres");
                p.setProperty("password", "postgres");
                List<Connection> direct = new ArrayList<>();
                try {
                    for (String port : nodePorts)
                        direct.add(DriverManager.getConnection("jdbc:postgresql://127.0.0.1:" + port
                                + "/postgres?connectTimeout=5&socketTimeout=10&sslmode=disable", p));
                    // A cancel that reaches the backend before its Execute started (it shows as
                    // active from its Parse on, and discards a cancel at each message it reads)
                    // is dropped by PostgreSQL: while the statement stays active, it is cancelled
                    // again, 500 ms apart. pgJDBC's Statement.cancel() sends one cancel per
                    // execution and ignores later calls, so the repeats go through the
                    // connection's cancelQuery(), which sends the same CancelRequest.
                    // A poll that fails (a standby cancelling it for a recovery conflict, a busy
                    // machine) counts as "still active": the canceller keeps trying until the
                    // deadline instead of dying silently, and says why in errs.
                    boolean sent = false;
                    while (true) {
                        boolean active = false;
                        for (Connection d : direct) {
                            try (PreparedStatement ps = d.prepareStatement("SELECT count(*) FROM pg_stat_activity "
                                    + "WHERE state = 'active' AND pid <> pg_backend_pid() AND strpos(query, ?) > 0")) {
                                ps.setString(1, tag);
                                active |= one(ps) > 0;
                            } catch (SQLException e) {
                                errs.add("canceller poll: " + e.getSQLState() + " " + e.getMessage());
                                active |= sent;
                            }
                        }
                        if (active) {
                            if (sent)
                                st.getConnection().unwrap(PGConnection.class).cancelQuery();
                            else
                                st.cancel();
                            sent = true;
                        } else if (sent) {
                            return;
                        }
                        if (System.currentTimeMillis() > deadline) {
                            if (!sent)
                                errs.add("the statement tagged " + tag + " never ran within 10 s");
                            return;
                        }
                        Thread.sleep(sent ? 500 : 50);
                    }
                } finally {
                    for (Connection d : direct) d.close();
                }
            } catch (Exception e) {
                errs.add("canceller: " + e);
            }
        });
        t.setDaemon(true);
        t.start();
        return t;
    }

    static void cancelOne(Connection c, String sql, String tag) throws Exception {
        List<String> errs = java.util.Collections.synchronizedList(new ArrayList<>());
        try (Statement st = c.createStatement()) {
            Thread t = cancelWhenActive(st, tag, errs);
            long t0 = System.currentTimeMillis();
            try {
                expectState("57014", () -> st.executeQuery(sql + " /* " + tag + " */"));
            } catch (Exception e) {
                throw new Exception(e.getMessage() + " (canceller: " + errs + ")", e);
            }
            check(System.currentTimeMillis() - t0 < 15000, sql + " was not cancelled in time");
            t.join(15000);
            errs.removeIf(m -> m.startsWith("canceller poll: "));
            check(errs.isEmpty(), errs.toString());
        }
    }

    static void cancel() throws Exception {
        try (Connection c = open()) {
            step = "Statement.cancel() of pg_sleep(30)";
            cancelOne(c, "SELECT pg_sleep(30)", "dm-cancel-" + table + "-0");
            step = "select after the cancel";
            check(one(c, "SELECT 1") == 1, step);
            step = "cancel of a long read in a transaction";
            c.setAutoCommit(false);
            check(one(c, "SELECT 2") == 2, "select 2");
            cancelOne(c, "SELECT count(*) FROM generate_series(1, 3000000000)", "dm-cancel-" + table + "-1");
            step = "rollback after the cancel";
            c.rollback();
            c.setAutoCommit(true);
            check(one(c, "SELECT 3") == 3, "select after the rollback");
            step = "Statement.cancel() of a server-prepared pg_sleep(?)";
            try (PreparedStatement ps = c.prepareStatement("SELECT pg_sleep(?) /* dm-cancel-" + table + "-2 */")) {
                for (int k = 0; k < 6; k++) {
                    ps.setDouble(1, 0.0);
                    ps.executeQuery().close();
                }
                List<String> errs = java.util.Collections.synchronizedList(new ArrayList<>());
                Thread t = cancelWhenActive(ps, "dm-cancel-" + table + "-2", errs);
                ps.setDouble(1, 30.0);
                expectState("57014", () -> ps.executeQuery());
                t.join(15000);
                check(errs.isEmpty(), errs.toString());
            }
            check(one(c, "SELECT 4") == 4, "select after the last cancel");
        }
    }

    static void errors() throws Exception {
        try (Connection c = open(); PreparedStatement div = c.prepareStatement("SELECT 10 / ?::int")) {
            c.setAutoCommit(false);
            step = "division by zero in a transaction";
            check(one(c, "SELECT 1") == 1, "select 1");
            expectState("22012", () -> one(c, "SELECT 1 / 0"));
            step = "the next statement in the failed transaction";
            expectState("25P02", () -> one(c, "SELECT 1"));
            c.rollback();
            check(one(c, "SELECT 2") == 2, "select after the rollback");
            c.commit();
            step = "unique violation after a write";
            try (Statement st = c.createStatement()) {
                st.executeUpdate("INSERT INTO " + table + " VALUES (1, 'gone')");
                expectState("23505", () -> st.executeUpdate("INSERT INTO " + table + " VALUES (1, 'dup')"));
            }
            c.rollback();
            check(one(c, "SELECT count(*) FROM " + table + " WHERE id = 1") == 0, "rolled-back row visible");
            c.commit();
            step = "savepoint";
            try (Statement st = c.createStatement()) {
                st.executeUpdate("INSERT INTO " + table + " VALUES (2, 's2')");
                Savepoint sp = c.setSavepoint("s");
                expectState("22012", () -> one(c, "SELECT 1 / 0"));
                c.rollback(sp);
                st.executeUpdate("INSERT INTO " + table + " VALUES (3, 's3')");
            }
            c.commit();
            // a server-prepared statement (used > 5 times) failing inside a transaction
            for (int k = 0; k < 7; k++) {
                step = "prepared 10 / ? in a transaction, round " + (k + 1);
                div.setInt(1, 2);
                check(one(div) == 5, step);
                div.setInt(1, 0);
                expectState("22012", () -> one(div));
                c.rollback();
            }
            c.setAutoCommit(true);
            step = "syntax error outside a transaction";
            expectState("42601", () -> one(c, "SELEC 1"));
            try (PreparedStatement w = c.prepareStatement("INSERT INTO " + table + " VALUES (?, ?)")) {
                w.setInt(1, 10);
                w.setString(2, "ok");
                w.executeUpdate();
            }
            check(one(c, "SELECT count(*) FROM " + table + " WHERE id = 10") == 1, "row 10 after the write");
        }
    }

    public static void main(String[] args) throws Exception {
        if (args.length != 6) {
            System.err.println("usage: MatrixCheck JDBC_URL USER PASSWORD FEATURE TABLE NODE_PORTS");
            System.exit(2);
        }
        url = args[0];
        user = args[1];
        password = args[2];
        String feature = args[3];
        table = args[4];
        nodePorts = args[5].split(",");
        try {
            switch (feature) {
                case "copy": copy(); break;
                case "cursor": cursor(); break;
                case "cursor_write": cursorWrite(); break;
                case "prepared": prepared(); break;
                case "write_read": writeRead(); break;
                case "listen": listen(); break;
                case "cancel": cancel(); break;
                case "errors": errors(); break;
                default:
                    System.err.println("unknown feature " + feature);
                    System.exit(2);
            }
        } catch (Throwable e) {
            String state = (e instanceof SQLException) ? ((SQLException) e).getSQLState() + " " : "";
            System.out.println("FAIL " + feature + " at step [" + step + "]: " + state + e);
            Throwable cause = e.getCause();
            if (cause != null && cause != e) System.out.println("  caused by: " + cause);
            System.exit(1);
        }
        System.out.println("OK " + feature);
        System.exit(0);
    }
}

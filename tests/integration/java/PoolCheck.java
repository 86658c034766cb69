// A JDBC client check for pgrelay's integration suite (tests/integration/test_drivers.py compiles and
// runs it). N threads each open a connection, run one statement and wait until all N have (the
// connections stay open, as in an application's connection pool: with pool_size < N this needs real
// transaction pooling, a client holding a backend connection for its whole session blocks the others), then
//   - execute one PreparedStatement "select ?::int * 2" ITER times (with the default prepareThreshold=5
//     pgJDBC switches it to a named server-side statement "S_n" after 5 executions),
//   - run TX small transactions (setAutoCommit(false), two statements that must see the same backend pid
//     and the same transaction id, commit),
// and verify every result. Prints "OK ..." and exits 0, or prints every error and exits 1 (2 on a hang,
// 3 when the N connections could not all run a statement while the others stay connected).
//
// usage: java -cp DIR:/usr/share/java/postgresql.jar PoolCheck JDBC_URL USER PASSWORD [N] [ITER] [TX] [HOLD_SECONDS]
//   HOLD_SECONDS (default 20): how long to wait for all N to be connected and have run one statement;
//   0 skips that phase.
import java.sql.Connection;
import java.sql.DriverManager;
import java.sql.PreparedStatement;
import java.sql.ResultSet;
import java.sql.SQLException;
import java.util.ArrayList;
import java.util.Collections;
import java.util.List;
import java.util.Properties;
import java.util.concurrent.CountDownLatch;
import java.util.concurrent.TimeUnit;

public class PoolCheck {
    static final List<String> errors = Collections.synchronizedList(new ArrayList<>());
    static volatile String[] steps;

    static long one(PreparedStatement ps) throws SQLException {
        try (ResultSet rs = ps.executeQuery()) {
            if (!rs.next()) throw new SQLException("no row");
            long v = rs.getLong(1);
            if (rs.next()) throw new SQLException("more than one row");
            return v;
        }
    }

    static void client(int id, String url, Properties props, int iter, int tx, CountDownLatch start,
                       CountDownLatch ready, int holdSeconds) throws Exception {
        start.await(30, TimeUnit.SECONDS);
        String step = "connect";
        steps[id - 1] = step;
        try (Connection c = DriverManager.getConnection(url, props)) {
            step = "first statement (all connections open)";
            steps[id - 1] = step;
            try (PreparedStatement ps = c.prepareStatement("select 1")) {
                if (one(ps) != 1) throw new Exception("select 1 gave a wrong answer");
            }
            step = "waiting for the other clients";
            steps[id - 1] = step;
            ready.countDown();
            if (holdSeconds > 0 && !ready.await(holdSeconds + 5, TimeUnit.SECONDS))
                throw new Exception("the other clients did not all connect and run a statement");
            step = "prepared select ?::int * 2";
            steps[id - 1] = "work";
            try (PreparedStatement ps = c.prepareStatement("select ?::int * 2")) {
                for (int k = 0; k < iter; k++) {
                    int x = id * 1000 + k;
                    ps.setInt(1, x);
                    step = "prepared select ?::int * 2, execution " + (k + 1);
                    long got = one(ps);
                    if (got != 2L * x) throw new Exception(step + ": got " + got + ", expected " + (2L * x));
                }
            }
            // A per-client statement text too: the same S_n names mean different queries on different clients.
            step = "prepared per-client select";
            try (PreparedStatement ps = c.prepareStatement("select ?::int + " + id)) {
                for (int k = 0; k < 10; k++) {
                    ps.setInt(1, k);
                    step = "prepared select ?::int + " + id + ", execution " + (k + 1);
                    long got = one(ps);
                    if (got != k + id) throw new Exception(step + ": got " + got + ", expected " + (k + id));
                }
            }
            step = "transaction";
            try (PreparedStatement pid = c.prepareStatement("select pg_backend_pid()");
                 PreparedStatement xid = c.prepareStatement("select txid_current()")) {
                for (int t = 0; t < tx; t++) {
                    step = "transaction " + (t + 1) + ": setAutoCommit(false)";
                    c.setAutoCommit(false);
                    step = "transaction " + (t + 1) + ": first statement";
                    long p1 = one(pid), x1 = one(xid);
                    step = "transaction " + (t + 1) + ": second statement";
                    long p2 = one(pid), x2 = one(xid);
                    if (p1 != p2) throw new Exception(step + ": backend pid changed inside the transaction: " + p1 + " -> " + p2);
                    if (x1 != x2) throw new Exception(step + ": txid changed inside the transaction: " + x1 + " -> " + x2);
                    step = "transaction " + (t + 1) + ": commit";
                    c.commit();
                    c.setAutoCommit(true);
                }
            }
            step = "final check";
            try (PreparedStatement ps = c.prepareStatement("select 41 + 1")) {
                if (one(ps) != 42) throw new Exception("final select gave a wrong answer");
            }
        } catch (Exception e) {
            StringBuilder sb = new StringBuilder("client " + id + " at step [" + step + "]: " + e);
            if (e instanceof SQLException) {
                SQLException s = (SQLException) e;
                sb.append(" (SQLState ").append(s.getSQLState()).append(")");
                for (SQLException n = s.getNextException(); n != null; n = n.getNextException())
                    sb.append("\n    next: ").append(n).append(" (SQLState ").append(n.getSQLState()).append(")");
            }
            for (Throwable cause = e.getCause(); cause != null; cause = cause.getCause())
                sb.append("\n    caused by: ").append(cause);
            errors.add(sb.toString());
        }
    }

    public static void main(String[] args) throws Exception {
        if (args.length < 3) {
            System.out.println("usage: PoolCheck JDBC_URL USER PASSWORD [N] [ITER] [TX]");
            System.exit(64);
        }
        String url = args[0];
        Properties props = new Properties();
        props.setProperty("user", args[1]);
        props.setProperty("password", args[2]);
        int n = args.length > 3 ? Integer.parseInt(args[3]) : 8;
        int iter = args.length > 4 ? Integer.parseInt(args[4]) : 50;
        int tx = args.length > 5 ? Integer.parseInt(args[5]) : 10;
        int holdSeconds = args.length > 6 ? Integer.parseInt(args[6]) : 20;
        steps = new String[n];
        Class.forName("org.postgresql.Driver");
        CountDownLatch start = new CountDownLatch(1);
        CountDownLatch ready = new CountDownLatch(holdSeconds > 0 ? n : 0);
        List<Thread> threads = new ArrayList<>();
        for (int i = 0; i < n; i++) {
            final int id = i + 1;
            Thread t = new Thread(() -> {
                try {
                    client(id, url, props, iter, tx, start, ready, holdSeconds);
                } catch (Throwable e) {
                    errors.add("client " + id + ": " + e);
                }
            }, "client-" + id);
            t.setDaemon(true);
            threads.add(t);
            t.start();
        }
        start.countDown();
        if (holdSeconds > 0 && !ready.await(holdSeconds, TimeUnit.SECONDS)) {
            synchronized (errors) {
                for (String e : errors) System.out.println("ERROR " + e);
            }
            System.out.println("HOLD FAILED: only " + (n - ready.getCount()) + " of " + n + " clients were connected and"
                    + " had run a statement after " + holdSeconds + " s, all connections staying open (the others"
                    + " wait for a backend connection: is a client holding one for its whole session?)");
            for (int i = 0; i < n; i++) System.out.println("  client " + (i + 1) + ": " + steps[i]);
            System.exit(3);
        }
        long deadline = System.nanoTime() + TimeUnit.SECONDS.toNanos(60);
        List<String> hung = new ArrayList<>();
        for (Thread t : threads) {
            long left = TimeUnit.NANOSECONDS.toMillis(deadline - System.nanoTime());
            t.join(Math.max(1, left));
            if (t.isAlive()) hung.add(t.getName());
        }
        synchronized (errors) {
            for (String e : errors) System.out.println("ERROR " + e);
        }
        if (!hung.isEmpty()) {
            System.out.println("HUNG " + hung);
            System.exit(2);
        }
        if (!errors.isEmpty()) {
            System.out.println("FAILED: " + errors.size() + " of " + n + " clients failed");
            System.exit(1);
        }
        System.out.println("OK " + n + " clients x (" + iter + " prepared executions + 10 per-client + " + tx + " transactions)");
        System.exit(0);
    }
}

// pgJDBC over TLS for tests/integration/test_tls.py: connects with the given URL (ssl=true,
// sslmode=verify-full, sslrootcert=...), checks current_user and a computed value, prints "OK".
// usage: java -cp CLASSPATH TlsCheck URL USER PASSWORD
// Prints "OK" and exits 0, or "FAIL SQLSTATE message" and exits 1.

import java.sql.Connection;
import java.sql.DriverManager;
import java.sql.PreparedStatement;
import java.sql.ResultSet;
import java.sql.SQLException;

public class TlsCheck {
    public static void main(String[] args) {
        String url = args[0], user = args[1], password = args[2];
        try (Connection c = DriverManager.getConnection(url, user, password);
             PreparedStatement s = c.prepareStatement("select current_user, ?::int + 1")) {
            s.setInt(1, 41);
            try (ResultSet r = s.executeQuery()) {
                r.next();
                if (!user.equals(r.getString(1)) || r.getInt(2) != 42) {
                    System.out.println("FAIL wrong result " + r.getString(1) + " " + r.getInt(2));
                    System.exit(1);
                }
            }
            System.out.println("OK");
        } catch (SQLException e) {
            System.out.println("FAIL " + e.getSQLState() + " " + e.getMessage());
            System.exit(1);
        }
    }
}

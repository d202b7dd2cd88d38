// Oracle for agent/tests/quartz_conformance.rs: runs the real org.quartz.CronExpression.
//
// Input (stdin), one case a line, tab-separated: ZONE <TAB> START_EPOCH_SECONDS <TAB> COUNT <TAB> EXPRESSION
// Output, one line a case: "ERR" when Quartz rejects the expression, otherwise "OK" followed by
// up to COUNT next fire times (epoch seconds, space-separated), "EXC" appended when the search
// threw, "HANG" appended when one search did not finish within a few seconds (Quartz loops
// forever on a few expressions). The first output line is "MAX_YEAR <n>".
import java.io.BufferedReader;
import java.io.InputStreamReader;
import java.nio.charset.StandardCharsets;
import java.text.ParseException;
import java.util.Date;
import java.util.TimeZone;
import org.quartz.CronExpression;

public class QuartzOracle {
    static final long HANG_MILLIS = 1500;

    @SuppressWarnings({"deprecation", "removal"})
    static void stop(Thread t) throws InterruptedException {
        t.stop();
        t.join(1000);
    }

    public static void main(String[] args) throws Exception {
        BufferedReader in = new BufferedReader(new InputStreamReader(System.in, StandardCharsets.UTF_8));
        StringBuilder out = new StringBuilder();
        out.append("MAX_YEAR ").append(CronExpression.MAX_YEAR).append('\n');
        String line;
        while ((line = in.readLine()) != null) {
            if (line.isEmpty()) continue;
            String[] parts = line.split("\t", 4);
            TimeZone tz = TimeZone.getTimeZone(parts[0]);
            long start = Long.parseLong(parts[1]);
            int count = Integer.parseInt(parts[2]);
            CronExpression cron;
            try {
                cron = new CronExpression(parts[3]);
            } catch (ParseException e) {
                out.append("ERR\n");
                continue;
            }
            cron.setTimeZone(tz);
            StringBuffer fires = new StringBuffer("OK");
            Thread search = new Thread(() -> {
                Date d = new Date(start * 1000L);
                try {
                    for (int i = 0; i < count; i++) {
                        d = cron.getTimeAfter(d);
                        if (d == null) break;
                        fires.append(' ').append(d.getTime() / 1000L);
                    }
                } catch (RuntimeException e) {
                    fires.append(" EXC");
                }
            });
            search.setDaemon(true);
            search.start();
            search.join(HANG_MILLIS);
            if (search.isAlive()) {
                stop(search);
                fires.append(" HANG");
            }
            out.append(fires).append('\n');
        }
        System.out.print(out);
    }
}

package txn.replay;

import org.apache.flink.api.common.functions.MapFunction;
import org.apache.flink.streaming.api.operators.AbstractStreamOperator;
import org.apache.flink.streaming.api.operators.BoundedOneInput;
import org.apache.flink.streaming.api.operators.OneInputStreamOperator;
import org.apache.flink.streaming.runtime.streamrecord.StreamRecord;

/**
 * The Java side of custom aggregates (flink_jobs/custom_aggregates.py runs the user's Python).
 *
 * <p>With aggregates configured, {@code ExactTotals(true)} keeps each window's on-time events and
 * {@code WindowLine} appends them ({@code |piece;piece}, a piece per window Flink merged into this
 * one). These operators split that stream: the plain window line goes to windows/ as without
 * aggregates, and the windows are batched, thousands to one record, so that one Python call per
 * batch (not per event: PyFlink runs about 4-5k records/s through a Python function) folds them
 * with the user's create_accumulator/add/merge/get_result. The batch is columnar, so that Python
 * parses it with a few C-level splits instead of a few string operations per window; Java then
 * formats the result lines ({@code ResultLines}).
 */
public final class CustomAggregateOperators {
    private CustomAggregateOperators() {}

    /** The window line without its collected events: exactly what WindowLine writes without them. */
    public static class WithoutEvents implements MapFunction<String, String> {
        @Override
        public String map(String line) {
            int bar = line.indexOf('|');
            return bar < 0 ? line : line.substring(0, bar);
        }
    }

    /**
     * Window lines {@code hex_key,start,end,count,sum,min,max|ts,amount ts,amount;ts,amount} in, one
     * record per batch out, six lines, each comma-separated:
     *
     * <pre>
     * hex keys        one per window
     * starts          one per window
     * ends            one per window
     * piece sizes     one per window: "n", or "n1;n2;..." for a session Flink merged from several
     * event times     all events of the batch, window by window, piece by piece, in arrival order
     * amounts         the same events' DECIMAL amounts
     * </pre>
     *
     * <p>A batch is emitted once its events take {@code maxChars} characters, at the end of input and
     * before a checkpoint barrier (nothing is kept in state), so no window is held back or lost. A
     * window is never split across batches.
     */
    public static class WindowBatches extends AbstractStreamOperator<String>
            implements OneInputStreamOperator<String, String>, BoundedOneInput {
        private final int maxChars;
        private transient StringBuilder keys;
        private transient StringBuilder starts;
        private transient StringBuilder ends;
        private transient StringBuilder sizes;
        private transient StringBuilder times;
        private transient StringBuilder amounts;
        private transient int windows;

        public WindowBatches(int maxChars) {
            if (maxChars < 1) {
                throw new IllegalArgumentException("maxChars must be >= 1, got " + maxChars);
            }
            this.maxChars = maxChars;
        }

        @Override
        public void open() throws Exception {
            super.open();
            int capacity = Math.min(maxChars, 1 << 20) + 4096;
            keys = new StringBuilder(capacity / 4);
            starts = new StringBuilder(capacity / 4);
            ends = new StringBuilder(capacity / 4);
            sizes = new StringBuilder(capacity / 8);
            times = new StringBuilder(capacity);
            amounts = new StringBuilder(capacity);
        }

        @Override
        public void processElement(StreamRecord<String> element) {
            String line = element.getValue();
            int c1 = line.indexOf(',');
            int c2 = line.indexOf(',', c1 + 1);
            int c3 = line.indexOf(',', c2 + 1);
            int bar = line.indexOf('|', c3 + 1);
            if (c1 < 0 || c2 < 0 || c3 < 0 || bar < 0) {
                throw new IllegalArgumentException("window line without collected events: " + line);
            }
            if (windows > 0) {
                keys.append(',');
                starts.append(',');
                ends.append(',');
                sizes.append(',');
            }
            keys.append(line, 0, c1);
            starts.append(line, c1 + 1, c2);
            ends.append(line, c2 + 1, c3);
            if (bar + 1 == line.length()) {
                sizes.append(0); // never from WindowLine (a window has an event), but keeps the columns aligned
            }
            int pieceSize = 0;
            for (int at = bar + 1; at < line.length(); ) {
                int comma = line.indexOf(',', at);
                int stop = comma;
                while (stop < line.length() && line.charAt(stop) != ' ' && line.charAt(stop) != ';') {
                    stop++;
                }
                if (times.length() > 0) {
                    times.append(',');
                    amounts.append(',');
                }
                times.append(line, at, comma);
                amounts.append(line, comma + 1, stop);
                pieceSize++;
                if (stop == line.length() || line.charAt(stop) == ';') {
                    sizes.append(pieceSize);
                    if (stop < line.length()) {
                        sizes.append(';');
                    }
                    pieceSize = 0;
                }
                at = stop + 1;
            }
            windows++;
            if (times.length() + amounts.length() >= maxChars) {
                flush();
            }
        }

        @Override
        public void endInput() {
            flush();
        }

        @Override
        public void prepareSnapshotPreBarrier(long checkpointId) throws Exception {
            super.prepareSnapshotPreBarrier(checkpointId);
            flush(); // the batch is not in any state: emit it before the barrier instead
        }

        private void flush() {
            if (windows == 0) {
                return;
            }
            StringBuilder batch = new StringBuilder(keys.length() + starts.length() + ends.length() + sizes.length()
                    + times.length() + amounts.length() + 8);
            batch.append(keys).append('\n').append(starts).append('\n').append(ends).append('\n').append(sizes)
                    .append('\n').append(times).append('\n').append(amounts);
            output.collect(new StreamRecord<>(batch.toString()));
            for (StringBuilder column : new StringBuilder[] {keys, starts, ends, sizes, times, amounts}) {
                column.setLength(0);
            }
            windows = 0;
        }
    }

    /**
     * The Python call's answer, {@code hex keys\nstarts\nends\n} (the batch's first three lines,
     * unchanged) then one line per aggregate {@code aggregate,value,value,...} (a value per window,
     * empty for NULL), as the lines {@code aggregate,hex_key,start,end,value} for custom/, joined
     * with '\n' into ONE record: the FileSink's per-record cost then falls on a batch, not on each
     * of its windows (the encoder ends the record with the last '\n').
     */
    public static class ResultLines implements MapFunction<String, String> {
        @Override
        public String map(String answer) {
            int n1 = answer.indexOf('\n');
            int n2 = answer.indexOf('\n', n1 + 1);
            int n3 = answer.indexOf('\n', n2 + 1);
            String[] keys = split(answer, 0, n1);
            String[] starts = split(answer, n1 + 1, n2);
            String[] ends = split(answer, n2 + 1, n3);
            StringBuilder lines = new StringBuilder(answer.length() * 2);
            for (int at = n3 + 1; at < answer.length(); ) {
                int stop = answer.indexOf('\n', at);
                if (stop < 0) {
                    stop = answer.length();
                }
                int comma = answer.indexOf(',', at);
                String aggregate = answer.substring(at, comma);
                String[] values = split(answer, comma + 1, stop);
                if (values.length != keys.length || starts.length != keys.length || ends.length != keys.length) {
                    throw new IllegalStateException("custom aggregate " + aggregate + " answered " + values.length
                            + " values for " + keys.length + " windows");
                }
                for (int i = 0; i < keys.length; i++) {
                    if (lines.length() > 0) {
                        lines.append('\n');
                    }
                    lines.append(aggregate).append(',').append(keys[i]).append(',').append(starts[i]).append(',')
                            .append(ends[i]).append(',').append(values[i]);
                }
                at = stop + 1;
            }
            return lines.toString();
        }

        /** The comma-separated fields of text[from, to), keeping empty ones. */
        private static String[] split(String text, int from, int to) {
            int count = 1;
            for (int i = from; i < to; i++) {
                if (text.charAt(i) == ',') {
                    count++;
                }
            }
            String[] fields = new String[count];
            int field = 0;
            int start = from;
            for (int i = from; i <= to; i++) {
                if (i == to || text.charAt(i) == ',') {
                    fields[field++] = text.substring(start, i);
                    start = i + 1;
                }
            }
            return fields;
        }
    }
}

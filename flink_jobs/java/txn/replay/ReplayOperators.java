package txn.replay;

import java.io.IOException;
import java.io.UncheckedIOException;
import java.math.BigDecimal;
import java.nio.file.Files;
import java.nio.file.Path;
import java.nio.file.Paths;
import java.util.ArrayList;
import java.util.List;

import org.apache.flink.api.common.functions.AggregateFunction;
import org.apache.flink.api.common.functions.MapFunction;
import org.apache.flink.api.common.state.ListState;
import org.apache.flink.api.common.state.ListStateDescriptor;
import org.apache.flink.api.common.typeinfo.Types;
import org.apache.flink.api.java.functions.KeySelector;
import org.apache.flink.runtime.state.StateInitializationContext;
import org.apache.flink.runtime.state.StateSnapshotContext;
import org.apache.flink.runtime.throwable.ThrowableAnnotation;
import org.apache.flink.runtime.throwable.ThrowableType;
import org.apache.flink.streaming.api.functions.windowing.ProcessWindowFunction;
import org.apache.flink.streaming.api.operators.AbstractStreamOperator;
import org.apache.flink.streaming.api.operators.OneInputStreamOperator;
import org.apache.flink.streaming.api.watermark.Watermark;
import org.apache.flink.streaming.api.windowing.triggers.Trigger;
import org.apache.flink.streaming.api.windowing.triggers.TriggerResult;
import org.apache.flink.streaming.api.windowing.windows.TimeWindow;
import org.apache.flink.streaming.runtime.streamrecord.StreamRecord;
import org.apache.flink.util.Collector;
import org.apache.flink.util.OutputTag;

/**
 * The Java building blocks of the replay job (flink_jobs/window_job.py wires them together).
 *
 * <p>Python never touches a record: parsing, the per-event watermark, keying, Flink's own
 * WindowOperator (tumbling, sliding or session assigner, allowed lateness, late side output) and the
 * exact DECIMAL aggregation all run here. Keys travel as the hex of their UTF-8 bytes, so a key may
 * hold commas, quotes or newlines and the staged file stays one record per line.
 */
public final class ReplayOperators {
    private ReplayOperators() {}

    /** One staged transaction. {@code watermark} is the watermark it was judged against. */
    public static class Event {
        public long sourceRow;
        public long eventTimeMs;
        public BigDecimal amount;
        public String hexKey;
        public long watermark = Long.MIN_VALUE;
        /** Set on the marker that ends a file of a stream (see {@link ParseStagedLine}); no transaction. */
        public String readMarker;

        public Event() {}
    }

    /**
     * A staged line that does not parse. It fails the same way after any restart, so Flink is told
     * not to restart the job for it (NonRecoverableError): it fails at once, not after the restarts.
     */
    @ThrowableAnnotation(ThrowableType.NonRecoverableError)
    public static class BadStagedLine extends IllegalArgumentException {
        public BadStagedLine(String message, Throwable cause) {
            super(message, cause);
        }
    }

    /**
     * Parses a staged line {@code source_row,event_time_ms,amount,hex_key}. A line {@code #<path>}
     * (the last line of a file replayed as part of a stream) is a marker, not a transaction: the
     * watermark operator creates that file once every line before it has been sent on, which tells
     * the job's driver that the file is read (it then takes a savepoint: flink_jobs/stream_job.py).
     */
    public static class ParseStagedLine implements MapFunction<String, Event> {
        @Override
        public Event map(String line) {
            if (line.startsWith("#")) {
                Event marker = new Event();
                marker.readMarker = line.substring(1);
                return marker;
            }
            int a = line.indexOf(',');
            int b = line.indexOf(',', a + 1);
            int c = line.indexOf(',', b + 1);
            if (a < 0 || b < 0 || c < 0) {
                throw new BadStagedLine("staged line is not source_row,event_time_ms,amount,hex_key: " + line, null);
            }
            Event event = new Event();
            try {
                event.sourceRow = Long.parseLong(line, 0, a, 10);
                event.eventTimeMs = Long.parseLong(line, a + 1, b, 10);
                event.amount = new BigDecimal(line.substring(b + 1, c));
            } catch (NumberFormatException error) {
                throw new BadStagedLine("staged line is not source_row,event_time_ms,amount,hex_key: " + line, error);
            }
            event.hexKey = line.substring(c + 1);
            return event;
        }
    }

    /**
     * The per-event watermark, in state this operator checkpoints. For every event it records the
     * watermark the event is judged against ({@code max - bound - 1} over the events before it,
     * Long.MIN_VALUE for the first), gives it its event time as the record's timestamp, and emits
     * {@code max - bound - 1} when the event raises the maximum (Flink's BoundedOutOfOrdernessWatermarks
     * emits the same value, but only periodically, which makes lateness depend on timing).
     *
     * <p>Why not a WatermarkGenerator: Flink keeps none of its state in checkpoints, so after a
     * restore the maximum would start again at Long.MIN_VALUE and the events after it would be
     * judged against a different watermark than in an undisturbed run. Here the maximum and the
     * last watermark sent are operator state (snapshotState / initializeState), and a restored
     * operator sends that watermark again in open(), before any record: the window operator's own
     * watermark (which Flink does not restore either) is back where it was before the next event
     * reaches it. Incoming watermarks are ignored except the end of input (Long.MAX_VALUE).
     *
     * <p>With {@code stepMs > 0} (tumbling and sliding windows) only the watermarks that cross a
     * cleanup time are emitted. A window of such a kind starts at a multiple of the slide, so its
     * cleanup time ({@code end - 1 + allowedLateness}) is {@code k * stepMs + phaseMs} for some k,
     * with {@code phaseMs = size - 1 + allowedLateness}. The window operator's decisions compare
     * watermarks with cleanup times (isWindowLate, its timers; isElementLate, {@code ts + lateness},
     * is only asked when all of an event's windows are late, which the last watermark sent already
     * shows), so they come out exactly as with every watermark, at the same events, and each window
     * subtask receives about one watermark per window length instead of one per event. Sessions end
     * anywhere: {@code stepMs = 0} emits every one.
     *
     * <p>It runs at parallelism 1 right after the source, so every window subtask sees the same
     * sequence of events and watermarks whatever the parallelism of the windows.
     */
    public static class PerEventWatermarkOperator extends AbstractStreamOperator<Event>
            implements OneInputStreamOperator<Event, Event> {
        private final long outOfOrdernessMs;
        private final long stepMs;
        private final long phaseMs;
        private transient long maxTimestamp;
        private transient long emitted;
        private transient boolean restored;
        private transient ListState<Long> state;

        public PerEventWatermarkOperator(long outOfOrdernessMs, long stepMs, long phaseMs) {
            this.outOfOrdernessMs = outOfOrdernessMs;
            this.stepMs = stepMs;
            this.phaseMs = phaseMs;
        }

        @Override
        public void initializeState(StateInitializationContext context) throws Exception {
            super.initializeState(context);
            maxTimestamp = Long.MIN_VALUE;
            emitted = Long.MIN_VALUE;
            // Union state: whatever the parallelism a checkpoint is restored at, every subtask gets
            // every entry. Entries come in pairs (maximum, last watermark sent); the largest wins.
            state = context.getOperatorStateStore().getUnionListState(
                    new ListStateDescriptor<>("per-event watermark: max event time, last watermark", Types.LONG));
            if (context.isRestored()) {
                List<Long> values = new ArrayList<>();
                for (Long value : state.get()) {
                    values.add(value);
                }
                for (int i = 0; i + 1 < values.size(); i += 2) {
                    maxTimestamp = Math.max(maxTimestamp, values.get(i));
                    emitted = Math.max(emitted, values.get(i + 1));
                }
                restored = true;
            }
        }

        @Override
        public void open() throws Exception {
            super.open();
            if (restored && emitted != Long.MIN_VALUE) {
                output.emitWatermark(new Watermark(emitted)); // before any record of the restored run
            }
        }

        @Override
        public void snapshotState(StateSnapshotContext context) throws Exception {
            super.snapshotState(context);
            state.update(List.of(maxTimestamp, emitted));
        }

        @Override
        public void processElement(StreamRecord<Event> record) {
            Event event = record.getValue();
            if (event.readMarker != null) { // the file is read: every event before it has been sent on
                touch(event.readMarker);
                return;
            }
            long time = event.eventTimeMs;
            event.watermark = maxTimestamp == Long.MIN_VALUE ? Long.MIN_VALUE : maxTimestamp - outOfOrdernessMs - 1;
            output.collect(record.replace(event, time));
            if (time > maxTimestamp) {
                maxTimestamp = time;
                long watermark = time - outOfOrdernessMs - 1;
                if (stepMs <= 0 || emitted == Long.MIN_VALUE
                        || Math.floorDiv(watermark - phaseMs, stepMs) > Math.floorDiv(emitted - phaseMs, stepMs)) {
                    emitted = watermark;
                    output.emitWatermark(new Watermark(watermark));
                }
            }
        }

        @Override
        public void processWatermark(Watermark mark) throws Exception {
            if (mark.getTimestamp() == Long.MAX_VALUE) { // end of input: every window fires
                emitted = Long.MAX_VALUE;
                super.processWatermark(mark);
            }
        }
    }

    private static void touch(String marker) {
        Path path = Paths.get(marker);
        try {
            Files.createDirectories(path.getParent());
            if (!Files.exists(path)) {
                Files.createFile(path);
            }
        } catch (IOException error) {
            throw new UncheckedIOException("cannot create the read marker " + marker, error);
        }
    }

    public static class KeyOf implements KeySelector<Event, String> {
        @Override
        public String getKey(Event event) {
            return event.hexKey;
        }
    }

    /**
     * Fires a window once, when it is cleaned up (watermark past {@code end - 1 + allowedLateness},
     * or the end of input): the final firing of the default EventTimeTrigger, without the earlier
     * ones, so every window (and every session, after all its merges) is one output row.
     */
    public static class FireAtCleanup extends Trigger<Object, TimeWindow> {
        private final long allowedLatenessMs;

        public FireAtCleanup(long allowedLatenessMs) {
            this.allowedLatenessMs = allowedLatenessMs;
        }

        private long cleanupTime(TimeWindow window) {
            long time = window.maxTimestamp() + allowedLatenessMs;
            return time >= window.maxTimestamp() ? time : Long.MAX_VALUE; // as WindowOperator.cleanupTime
        }

        @Override
        public TriggerResult onElement(Object element, long timestamp, TimeWindow window, TriggerContext ctx) {
            ctx.registerEventTimeTimer(cleanupTime(window));
            return TriggerResult.CONTINUE;
        }

        @Override
        public TriggerResult onEventTime(long time, TimeWindow window, TriggerContext ctx) {
            return time == cleanupTime(window) ? TriggerResult.FIRE : TriggerResult.CONTINUE;
        }

        @Override
        public TriggerResult onProcessingTime(long time, TimeWindow window, TriggerContext ctx) {
            return TriggerResult.CONTINUE;
        }

        @Override
        public boolean canMerge() {
            return true;
        }

        @Override
        public void onMerge(TimeWindow window, OnMergeContext ctx) {
            ctx.registerEventTimeTimer(cleanupTime(window));
        }

        @Override
        public void clear(TimeWindow window, TriggerContext ctx) {
            ctx.deleteEventTimeTimer(cleanupTime(window));
        }
    }

    /** Exact per-window aggregates: count, DECIMAL sum, min and max. */
    public static class Totals {
        public long count;
        public BigDecimal sum = BigDecimal.ZERO;
        public BigDecimal min;
        public BigDecimal max;
        /** Only with collectEvents: the window's events as "event_time_ms,amount", one piece per
         * window Flink merged into this one (sessions), in arrival order within a piece. */
        public List<List<String>> pieces;

        public Totals() {}
    }

    public static class ExactTotals implements AggregateFunction<Event, Totals, Totals> {
        private final boolean collectEvents;

        public ExactTotals(boolean collectEvents) {
            this.collectEvents = collectEvents;
        }

        @Override
        public Totals createAccumulator() {
            Totals totals = new Totals();
            if (collectEvents) {
                totals.pieces = new ArrayList<>();
                totals.pieces.add(new ArrayList<>());
            }
            return totals;
        }

        @Override
        public Totals add(Event event, Totals totals) {
            totals.count += 1;
            totals.sum = totals.sum.add(event.amount);
            if (totals.min == null || event.amount.compareTo(totals.min) < 0) {
                totals.min = event.amount;
            }
            if (totals.max == null || event.amount.compareTo(totals.max) > 0) {
                totals.max = event.amount;
            }
            if (totals.pieces != null) {
                totals.pieces.get(totals.pieces.size() - 1).add(event.eventTimeMs + "," + event.amount.toPlainString());
            }
            return totals;
        }

        @Override
        public Totals getResult(Totals totals) {
            return totals;
        }

        @Override
        public Totals merge(Totals a, Totals b) {
            Totals merged = new Totals();
            merged.count = a.count + b.count;
            merged.sum = a.sum.add(b.sum);
            merged.min = a.min == null ? b.min : b.min == null ? a.min : a.min.min(b.min);
            merged.max = a.max == null ? b.max : b.max == null ? a.max : a.max.max(b.max);
            if (a.pieces != null || b.pieces != null) {
                merged.pieces = new ArrayList<>();
                for (Totals side : new Totals[] {a, b}) {
                    if (side.pieces != null) {
                        for (List<String> piece : side.pieces) {
                            if (!piece.isEmpty()) {
                                merged.pieces.add(piece);
                            }
                        }
                    }
                }
                merged.pieces.add(new ArrayList<>()); // later events of the merged window
            }
            return merged;
        }
    }

    /**
     * One output line per window: {@code hex_key,start,end,count,sum,min,max}; with collected
     * events a fifth field group follows: {@code |piece;piece...} where a piece is
     * {@code ts,amount ts,amount ...}.
     */
    public static class WindowLine extends ProcessWindowFunction<Totals, String, String, TimeWindow> {
        @Override
        public void process(String hexKey, Context context, Iterable<Totals> results, Collector<String> out) {
            TimeWindow window = context.window();
            for (Totals totals : results) {
                StringBuilder line = new StringBuilder(96);
                line.append(hexKey).append(',').append(window.getStart()).append(',').append(window.getEnd())
                        .append(',').append(totals.count).append(',').append(totals.sum.toPlainString())
                        .append(',').append(totals.min.toPlainString()).append(',').append(totals.max.toPlainString());
                if (totals.pieces != null) {
                    line.append('|');
                    boolean firstPiece = true;
                    for (List<String> piece : totals.pieces) {
                        if (piece.isEmpty()) {
                            continue;
                        }
                        if (!firstPiece) {
                            line.append(';');
                        }
                        firstPiece = false;
                        line.append(String.join(" ", piece));
                    }
                }
                out.collect(line.toString());
            }
        }
    }

    /** Late events, as {@code source_row,event_time_ms,amount,watermark_ms,hex_key}. */
    public static class LateLine implements MapFunction<Event, String> {
        @Override
        public String map(Event event) {
            return event.sourceRow + "," + event.eventTimeMs + "," + event.amount.toPlainString() + ","
                    + event.watermark + "," + event.hexKey;
        }
    }

    public static OutputTag<Event> lateTag() {
        return new OutputTag<Event>("late-events") {};
    }
}

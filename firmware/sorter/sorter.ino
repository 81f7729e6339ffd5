// fovea sorter firmware: two gate servos driven by the fovea line protocol v1.2 (docs/protocol.md).
//
// Gates: servo 1 on pin 5, servo 2 on pin 6; 0 deg = closed, 90 deg = open. Closed gates (and
// de-energised servos) send every item to the default route, so power loss is safe.
// The host schedules each actuation (relative delay in ms, or a belt-encoder count on pin 2);
// this board ACKs on receipt, reports DONE with the gate's actual open interval when the hold ran
// its course, NAKs what it cannot do (ABORTED, with the interval, for a swing cut short), and
// latches SAFE when the host goes quiet for WATCHDOG_MS, until an explicit ARM.
// The id ring is also the fate journal: it lives in .noinit RAM, so it survives a reset that
// keeps RAM (DTR, watchdog, brown-out); after such a reset a queued command reads NAK RESET and a
// swing that was open reads NAK ABORTED, and STATUS <id> tells the host. After a power loss the
// journal is invalid (magic words) and STATUS answers UNKNOWN.
// CANCEL <id> (v1.2) withdraws a queued command (NAK <id> CANCELLED: its gate never opens for it);
// a swing that has begun is never withdrawn (CANCEL <id> TOO_LATE; its DONE / NAK ABORTED follows).
// The Python emulator (src/fovea/line/mcu.py) implements the same state machine; both are
// checked against one table, docs/protocol_cases.json.

#include <Arduino.h>
#include <Servo.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef uint32_t ms_t;   // millis() as the AVR counts it: wraps after 49.7 days ...
typedef int32_t dms_t;   // ... so times are compared by their signed difference

#define FW_VERSION "1.2"
const uint8_t N_GATES = 2;
const uint8_t GATE_PINS[N_GATES] = {5, 6};
const uint8_t ENCODER_PIN = 2;
const int ANGLE_CLOSED = 0;
const int ANGLE_OPEN = 90;
const ms_t WATCHDOG_MS = 500;
const ms_t DETACH_AFTER_MS = 400;   // let a closing servo arrive before de-energising it
const ms_t MAX_AT_MS = 60000;
const ms_t MAX_HOLD_MS = 5000;
const uint8_t QUEUE_SIZE = 16;
const uint8_t RING_SIZE = 32;
const uint8_t MAX_LINE = 63;
const uint32_t JOURNAL_MAGIC = 0x5A17C0DEUL;

#ifndef NOINIT
#define NOINIT __attribute__((section(".noinit")))   // not cleared by the C runtime at reset
#endif

enum LineState { STATE_SAFE, STATE_ARMED };
enum Status { ST_NONE, ST_ACK, ST_OPEN, ST_DONE, ST_NAK };
enum Reason { R_LATE, R_QUEUE_FULL, R_BAD_ARG, R_SAFE, R_ABORTED, R_RESET, R_BOOT, R_CANCELLED };
const char *const REASONS[] = {"LATE", "QUEUE_FULL", "BAD_ARG", "SAFE", "ABORTED", "RESET", "BOOT", "CANCELLED"};

struct Fire {
  bool used;
  long id;
  uint8_t gate;          // 0-based
  bool byEncoder;
  ms_t due;     // millis() for delay scheduling
  long enc;              // target count for encoder scheduling
  ms_t hold;
};

struct Swing {
  bool open;
  ms_t since;   // millis() when the gate opened
  ms_t until;
};

struct RingEntry {       // last status of a command id, so a resent FIRE is answered, never re-fired
  long id;
  uint8_t status;
  uint8_t reason;
  uint8_t gate;          // 0-based
  bool byEncoder;
  ms_t due;     // millis() it fires at (encoder commands: when the count was reached)
  long enc;
  long from;             // gate open interval relative to due, ms
  long to;
  ms_t t;       // millis() of the release (DONE)
};

struct Journal {         // the fate journal; .noinit: survives resets that keep RAM
  uint32_t magic;
  RingEntry ring[RING_SIZE];
  uint8_t next;
  ms_t lastMs;  // millis() of the last loop: the moment of a reset, for cut swings
  ms_t boots;   // counts resets that kept RAM (garbage after a power loss): varies the boot id
  uint32_t magicInv;
};

Servo servos[N_GATES];
Fire fireQueue[QUEUE_SIZE];
Swing swings[N_GATES];
NOINIT Journal journal;
LineState state;
const char *safeReason;
unsigned int latchCount;                // SAFE latches of this boot (PONG / STATE SAFE latch=)
char bootId[5];
ms_t lastRx;
ms_t detachAt;
bool detachPending;
volatile long encoderCount;
char rxBuf[MAX_LINE + 1];
uint8_t rxLen;
bool rxOverflow;
char txBuf[96];

// ------------------------------------------------------------------------------ prototypes
void onEncoder();
void sendLine(const char *s);
void sendEntry(const RingEntry *e);
void sendNak(long id, uint8_t reason);
RingEntry *findRing(long id);
RingEntry *newEntry(long id, uint8_t status, uint8_t reason);
void nak(long id, uint8_t reason);
void restoreJournal();
void openGate(uint8_t g, long id, ms_t hold, ms_t now);
void closeGate(uint8_t g, bool completed, ms_t now);
void latchSafe(const char *reason, ms_t now);
void handleLine(char *line, ms_t now);
void handleFire(char *args, ms_t now);
void handleCancel(char *args, ms_t now);
bool parseLong(const char *s, long *out);
bool parseULong(const char *s, ms_t *out);
uint8_t queueDepth();
void runTimers(ms_t now);

// ------------------------------------------------------------------------------ setup / loop
void setup() {
  Serial.begin(115200);
  for (uint8_t g = 0; g < N_GATES; g++) swings[g].open = false;
  for (uint8_t i = 0; i < QUEUE_SIZE; i++) fireQueue[i].used = false;
  restoreJournal();
  rxLen = 0;
  rxOverflow = false;
  detachPending = false;
  encoderCount = 0;
  state = STATE_SAFE;                   // boot latched safe: nothing moves until the host ARMs
  latchCount = 0;
  pinMode(ENCODER_PIN, INPUT_PULLUP);
  attachInterrupt(digitalPinToInterrupt(ENCODER_PIN), onEncoder, RISING);
  randomSeed(analogRead(A0) ^ micros() ^ (journal.boots * 2654435761UL));   // after restoreJournal()
  snprintf(bootId, sizeof(bootId), "%04lx", (unsigned long)random(0, 0xFFFF));
  lastRx = millis();
  snprintf(txBuf, sizeof(txBuf), "READY fw=%s gates=%u boot=%s state=SAFE reason=%s", FW_VERSION, N_GATES, bootId,
           safeReason);
  sendLine(txBuf);
}

// A reset that kept RAM leaves a valid journal: its queued commands never started (NAK RESET),
// its open swings were cut at the last loop before the reset (NAK ABORTED). Else start empty.
void restoreJournal() {
  if (journal.magic == JOURNAL_MAGIC && journal.magicInv == ~JOURNAL_MAGIC && journal.next < RING_SIZE) {
    for (uint8_t i = 0; i < RING_SIZE; i++) {
      RingEntry &e = journal.ring[i];
      if (e.status == ST_ACK) {
        e.status = ST_NAK;
        e.reason = R_RESET;
      } else if (e.status == ST_OPEN) {
        e.status = ST_NAK;
        e.reason = R_ABORTED;
        e.to = (dms_t)(journal.lastMs - e.due);
      }
    }
    safeReason = "RESET";
  } else {
    for (uint8_t i = 0; i < RING_SIZE; i++) journal.ring[i].status = ST_NONE;
    journal.next = 0;
    journal.magic = JOURNAL_MAGIC;
    journal.magicInv = ~JOURNAL_MAGIC;
    safeReason = "BOOT";
  }
  journal.boots++;
  journal.lastMs = millis();
}

void loop() {
  ms_t now = millis();
  while (Serial.available() > 0) {
    int c = Serial.read();
    if (c < 0) break;
    if (c == '\r') continue;
    if (c == '\n') {
      if (rxOverflow) {
        sendLine("ERR TOO_LONG");
      } else if (rxLen > 0) {
        rxBuf[rxLen] = '\0';
        handleLine(rxBuf, now);
      }
      rxLen = 0;
      rxOverflow = false;
    } else if (rxLen >= MAX_LINE) {
      rxOverflow = true;
      rxLen = 0;
    } else if (!rxOverflow) {
      rxBuf[rxLen++] = (char)c;
    }
  }
  runTimers(now);
  journal.lastMs = now;
}

void onEncoder() { encoderCount++; }

// ------------------------------------------------------------------------------ timers
void runTimers(ms_t now) {
  for (uint8_t g = 0; g < N_GATES; g++) {          // releases first, as the emulator orders them
    if (swings[g].open && (dms_t)(now - swings[g].until) >= 0) closeGate(g, true, now);
  }
  noInterrupts();
  long count = encoderCount;
  interrupts();
  while (true) {                                   // due fires, earliest first
    int best = -1;
    for (uint8_t i = 0; i < QUEUE_SIZE; i++) {
      Fire &f = fireQueue[i];
      if (!f.used) continue;
      bool due = f.byEncoder ? (f.enc <= count) : ((dms_t)(now - f.due) >= 0);
      if (due && (best < 0 || (!f.byEncoder && (dms_t)(f.due - fireQueue[best].due) < 0))) best = i;
    }
    if (best < 0) break;
    Fire &f = fireQueue[best];
    f.used = false;
    openGate(f.gate, f.id, f.hold, now);
  }
  if (state == STATE_ARMED && now - lastRx >= WATCHDOG_MS) latchSafe("HB_TIMEOUT", now);
  if (detachPending && (dms_t)(now - detachAt) >= 0) {
    for (uint8_t g = 0; g < N_GATES; g++) servos[g].detach();   // de-energised = default route
    detachPending = false;
  }
}

// ------------------------------------------------------------------------------ gates
void openGate(uint8_t g, long id, ms_t hold, ms_t now) {
  Swing &s = swings[g];
  ms_t until = now + hold;
  if (s.open) {
    if ((dms_t)(until - s.until) > 0) s.until = until;
  } else {
    s.open = true;
    s.since = now;
    s.until = until;
    servos[g].write(ANGLE_OPEN);
  }
  RingEntry *e = findRing(id);
  if (e != NULL) {
    e->status = ST_OPEN;
    e->due = now;
    e->from = (dms_t)(s.since - now);
  }
}

// Every command whose swing this was gets its fate: DONE (hold ran its course) or NAK ABORTED.
void closeGate(uint8_t g, bool completed, ms_t now) {
  Swing &s = swings[g];
  s.open = false;
  servos[g].write(ANGLE_CLOSED);
  for (uint8_t i = 0; i < RING_SIZE; i++) {
    RingEntry &e = journal.ring[i];
    if (e.status != ST_OPEN || e.gate != g) continue;
    e.to = (dms_t)(now - e.due);
    e.t = now;
    if (completed) {
      e.status = ST_DONE;
    } else {
      e.status = ST_NAK;
      e.reason = R_ABORTED;
    }
    sendEntry(&e);
  }
}

void latchSafe(const char *reason, ms_t now) {
  for (uint8_t i = 0; i < QUEUE_SIZE; i++) {
    if (!fireQueue[i].used) continue;
    fireQueue[i].used = false;
    RingEntry *e = findRing(fireQueue[i].id);
    if (e != NULL) {
      e->status = ST_NAK;
      e->reason = R_SAFE;
    }
    sendNak(fireQueue[i].id, R_SAFE);
  }
  for (uint8_t g = 0; g < N_GATES; g++) {
    if (swings[g].open) closeGate(g, false, now);
    servos[g].write(ANGLE_CLOSED);
  }
  detachAt = now + DETACH_AFTER_MS;
  detachPending = true;
  state = STATE_SAFE;
  safeReason = reason;
  latchCount++;
  snprintf(txBuf, sizeof(txBuf), "STATE SAFE reason=%s latch=%u", reason, latchCount);
  sendLine(txBuf);
}

// ------------------------------------------------------------------------------ id ring / journal
RingEntry *findRing(long id) {
  for (uint8_t i = 0; i < RING_SIZE; i++) {
    if (journal.ring[i].status != ST_NONE && journal.ring[i].id == id) return &journal.ring[i];
  }
  return NULL;
}

// The oldest-inserted slot that holds no live command (ACK or OPEN); NULL if every slot does.
RingEntry *newEntry(long id, uint8_t status, uint8_t reason) {
  for (uint8_t k = 0; k < RING_SIZE; k++) {
    uint8_t i = (journal.next + k) % RING_SIZE;
    RingEntry &e = journal.ring[i];
    if (e.status == ST_ACK || e.status == ST_OPEN) continue;
    e.id = id;
    e.status = status;
    e.reason = reason;
    e.gate = 0;
    e.byEncoder = false;
    e.due = 0;
    e.enc = 0;
    e.from = 0;
    e.to = 0;
    e.t = 0;
    journal.next = (i + 1) % RING_SIZE;
    return &e;
  }
  return NULL;
}

void nak(long id, uint8_t reason) {
  newEntry(id, ST_NAK, reason);
  sendNak(id, reason);
}

void sendNak(long id, uint8_t reason) {
  snprintf(txBuf, sizeof(txBuf), "NAK %ld %s", id, REASONS[reason]);
  sendLine(txBuf);
}

void sendEntry(const RingEntry *e) {
  switch (e->status) {
    case ST_ACK:
    case ST_OPEN:
      if (e->byEncoder) snprintf(txBuf, sizeof(txBuf), "ACK %ld due_enc=%ld", e->id, e->enc);
      else snprintf(txBuf, sizeof(txBuf), "ACK %ld due=%lu", e->id, (unsigned long)e->due);
      break;
    case ST_DONE:
      snprintf(txBuf, sizeof(txBuf), "DONE %ld t=%lu from=%ld to=%ld", e->id, (unsigned long)e->t, e->from, e->to);
      break;
    default:
      if (e->reason == R_ABORTED) {
        snprintf(txBuf, sizeof(txBuf), "NAK %ld ABORTED from=%ld to=%ld", e->id, e->from, e->to);
      } else {
        snprintf(txBuf, sizeof(txBuf), "NAK %ld %s", e->id, REASONS[e->reason]);
      }
      break;
  }
  sendLine(txBuf);
}

// ------------------------------------------------------------------------------ commands
void sendLine(const char *s) { Serial.println(s); }

bool parseLong(const char *s, long *out) {
  if (s == NULL || *s == '\0') return false;
  const char *p = s;
  if (*p == '+' || *p == '-') p++;
  if (*p == '\0') return false;
  for (const char *q = p; *q; q++) {
    if (*q < '0' || *q > '9') return false;
  }
  *out = strtol(s, NULL, 10);
  return true;
}

bool parseULong(const char *s, ms_t *out) {   // 0 .. 4294967295, digits only
  if (s == NULL || *s == '\0' || strlen(s) > 10) return false;
  unsigned long v = 0;
  for (const char *q = s; *q; q++) {
    if (*q < '0' || *q > '9') return false;
    unsigned long d = (unsigned long)(*q - '0');
    if (v > (0xFFFFFFFFUL - d) / 10UL) return false;
    v = v * 10UL + d;
  }
  *out = v;
  return true;
}

uint8_t queueDepth() {
  uint8_t n = 0;
  for (uint8_t i = 0; i < QUEUE_SIZE; i++) n += fireQueue[i].used ? 1 : 0;
  return n;
}

void handleLine(char *line, ms_t now) {
  while (*line == ' ') line++;
  if (*line == '\0') return;
  lastRx = now;                                   // any well-formed line feeds the watchdog
  char *args = strchr(line, ' ');
  if (args != NULL) *args++ = '\0';
  for (char *p = line; *p; p++) *p = toupper(*p);
  if (strcmp(line, "HELLO") == 0) {
    snprintf(txBuf, sizeof(txBuf), "READY fw=%s gates=%u boot=%s state=%s reason=%s", FW_VERSION, N_GATES,
             bootId, state == STATE_ARMED ? "ARMED" : "SAFE", state == STATE_ARMED ? "ARM" : safeReason);
    sendLine(txBuf);
  } else if (strcmp(line, "ARM") == 0) {
    state = STATE_ARMED;
    detachPending = false;
    for (uint8_t g = 0; g < N_GATES; g++) {
      servos[g].attach(GATE_PINS[g]);
      servos[g].write(ANGLE_CLOSED);
    }
    sendLine("STATE ARMED reason=ARM");
  } else if (strcmp(line, "SAFE") == 0 || strcmp(line, "DISARM") == 0) {
    latchSafe("HOST", now);
  } else if (strcmp(line, "PING") == 0) {
    char *seq = args ? strtok(args, " ") : NULL;
    snprintf(txBuf, sizeof(txBuf), "PONG %s q=%u state=%s t=%lu latch=%u", seq ? seq : "0", queueDepth(),
             state == STATE_ARMED ? "ARMED" : "SAFE", (unsigned long)now, latchCount);
    sendLine(txBuf);
  } else if (strcmp(line, "FIRE") == 0) {
    handleFire(args, now);
  } else if (strcmp(line, "CANCEL") == 0) {
    handleCancel(args, now);
  } else if (strcmp(line, "STATUS") == 0) {
    char *tok = args ? strtok(args, " ") : NULL;
    long id;
    if (tok == NULL || !parseLong(tok, &id)) {
      sendLine("ERR BAD_CMD");
      return;
    }
    RingEntry *e = findRing(id);
    if (e != NULL) {
      sendEntry(e);
    } else {
      snprintf(txBuf, sizeof(txBuf), "UNKNOWN %ld", id);
      sendLine(txBuf);
    }
  } else {
    sendLine("ERR BAD_CMD");
  }
}

void handleFire(char *args, ms_t now) {
  char *tok = args ? strtok(args, " ") : NULL;
  long id;
  if (tok == NULL || strchr(tok, '=') != NULL || !parseLong(tok, &id)) {
    sendLine("ERR BAD_CMD");
    return;
  }
  RingEntry *known = findRing(id);
  if (known != NULL) {                            // idempotent: repeat the status, never re-fire
    sendEntry(known);
    return;
  }
  long gate = 0, at = 0, enc = 0, hold = 0;
  ms_t dueMs = 0;
  bool hasGate = false, hasAt = false, hasEnc = false, hasDue = false, hasHold = false, bad = false;
  bool otherBoot = false;
  while ((tok = strtok(NULL, " ")) != NULL) {
    char *eq = strchr(tok, '=');
    if (eq == NULL) continue;
    *eq = '\0';
    const char *val = eq + 1;
    if (strcmp(tok, "gate") == 0) { hasGate = true; bad |= !parseLong(val, &gate); }
    else if (strcmp(tok, "at") == 0) { hasAt = true; bad |= !parseLong(val, &at); }
    else if (strcmp(tok, "enc") == 0) { hasEnc = true; bad |= !parseLong(val, &enc); }
    else if (strcmp(tok, "due") == 0) { hasDue = true; bad |= !parseULong(val, &dueMs); }
    else if (strcmp(tok, "hold") == 0) { hasHold = true; bad |= !parseLong(val, &hold); }
    else if (strcmp(tok, "boot") == 0) { otherBoot = strcmp(val, bootId) != 0; }
  }
  // due= is an absolute time on this board's millis(), so a FIRE delayed on the wire fires on time or
  // is refused LATE, never late; boot= makes a FIRE meant for an earlier boot harmless (NAK BOOT).
  // Differences of unsigned millis() values are taken as signed longs, so all of this holds across the
  // 49.7-day wrap.
  ms_t due = hasDue ? dueMs : now + (ms_t)at;
  bad = bad || !hasGate || !hasHold || gate < 1 || gate > N_GATES || hold <= 0 || hold > (long)MAX_HOLD_MS;
  bad = bad || ((hasAt ? 1 : 0) + (hasEnc ? 1 : 0) + (hasDue ? 1 : 0) != 1) || (hasAt && at > (long)MAX_AT_MS);
  bad = bad || (hasDue && (dms_t)(due - now) > (long)MAX_AT_MS);
  noInterrupts();
  long count = encoderCount;
  interrupts();
  if (bad) {
    nak(id, R_BAD_ARG);
  } else if (otherBoot) {
    nak(id, R_BOOT);
  } else if (state != STATE_ARMED) {
    nak(id, R_SAFE);
  } else if ((hasAt && at < 0) || (hasEnc && enc <= count) || (hasDue && (dms_t)(due - now) < 0)) {
    nak(id, R_LATE);
  } else if (queueDepth() >= QUEUE_SIZE) {
    nak(id, R_QUEUE_FULL);
  } else {
    RingEntry *e = newEntry(id, ST_ACK, 0);
    if (e == NULL) {                              // every journal slot holds a live command
      sendNak(id, R_QUEUE_FULL);
      return;
    }
    e->gate = (uint8_t)(gate - 1);
    e->byEncoder = hasEnc;
    e->due = due;
    e->enc = enc;
    for (uint8_t i = 0; i < QUEUE_SIZE; i++) {
      Fire &f = fireQueue[i];
      if (f.used) continue;
      f.used = true;
      f.id = id;
      f.gate = (uint8_t)(gate - 1);
      f.byEncoder = hasEnc;
      f.due = due;
      f.enc = enc;
      f.hold = (ms_t)hold;
      break;
    }
    sendEntry(e);
  }
}

// CANCEL <id> [boot=<b>]: withdraw a queued command, never one whose swing has begun. Queued -> NAK
// CANCELLED (dropped from the schedule); swing open -> CANCEL <id> TOO_LATE; ended -> its status line.
// An id never seen is recorded as cancelled, so a copy of its FIRE still on the wire is refused
// (NAK BOOT instead when boot= names another boot; UNKNOWN when every journal slot is live).
void handleCancel(char *args, ms_t now) {
  char *tok = args ? strtok(args, " ") : NULL;
  long id;
  if (tok == NULL || strchr(tok, '=') != NULL || !parseLong(tok, &id)) {
    sendLine("ERR BAD_CMD");
    return;
  }
  bool otherBoot = false;
  while ((tok = strtok(NULL, " ")) != NULL) {
    if (strncmp(tok, "boot=", 5) == 0) otherBoot = strcmp(tok + 5, bootId) != 0;
  }
  runTimers(now);                                 // a swing due by now has begun (as the emulator orders it)
  RingEntry *e = findRing(id);
  if (e == NULL && otherBoot) {
    sendNak(id, R_BOOT);
  } else if (e == NULL) {
    if (newEntry(id, ST_NAK, R_CANCELLED) != NULL) {
      sendNak(id, R_CANCELLED);
    } else {
      snprintf(txBuf, sizeof(txBuf), "UNKNOWN %ld", id);
      sendLine(txBuf);
    }
  } else if (e->status == ST_ACK) {
    for (uint8_t i = 0; i < QUEUE_SIZE; i++) {
      if (fireQueue[i].used && fireQueue[i].id == id) fireQueue[i].used = false;
    }
    e->status = ST_NAK;
    e->reason = R_CANCELLED;
    sendEntry(e);
  } else if (e->status == ST_OPEN) {
    snprintf(txBuf, sizeof(txBuf), "CANCEL %ld TOO_LATE", id);
    sendLine(txBuf);
  } else {
    sendEntry(e);
  }
}

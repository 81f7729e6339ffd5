// fovea sorter firmware: two gate servos driven by the fovea line protocol (docs/protocol.md).
//
// Gates: servo 1 on pin 5, servo 2 on pin 6; 0 deg = closed, 90 deg = open. Closed gates (and
// de-energised servos) send every item to the default route, so power loss is safe.
// The host schedules each actuation (relative delay in ms, or a belt-encoder count on pin 2);
// this board ACKs on receipt, reports DONE when the gate's hold ran its course, NAKs what it
// cannot do, and latches SAFE when the host goes quiet for WATCHDOG_MS, until an explicit ARM.
// The Python emulator (src/fovea/line/emulator.py) implements the same state machine; both are
// checked against one table, docs/protocol_cases.json.

#include <Arduino.h>
#include <Servo.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define FW_VERSION "1.0"
const uint8_t N_GATES = 2;
const uint8_t GATE_PINS[N_GATES] = {5, 6};
const uint8_t ENCODER_PIN = 2;
const int ANGLE_CLOSED = 0;
const int ANGLE_OPEN = 90;
const unsigned long WATCHDOG_MS = 500;
const unsigned long DETACH_AFTER_MS = 400;   // let a closing servo arrive before de-energising it
const unsigned long MAX_AT_MS = 60000;
const unsigned long MAX_HOLD_MS = 5000;
const uint8_t QUEUE_SIZE = 16;
const uint8_t RING_SIZE = 32;
const uint8_t MAX_LINE = 63;
const uint8_t MAX_IDS_PER_SWING = 8;

enum LineState { STATE_SAFE, STATE_ARMED };
enum Status { ST_NONE, ST_ACK, ST_ACK_ENC, ST_DONE, ST_NAK };
enum Reason { R_LATE, R_QUEUE_FULL, R_BAD_ARG, R_SAFE, R_ABORTED };
const char *const REASONS[] = {"LATE", "QUEUE_FULL", "BAD_ARG", "SAFE", "ABORTED"};

struct Fire {
  bool used;
  long id;
  uint8_t gate;          // 0-based
  bool byEncoder;
  unsigned long due;     // millis() for delay scheduling
  long enc;              // target count for encoder scheduling
  unsigned long hold;
};

struct Swing {
  bool open;
  unsigned long until;
  long ids[MAX_IDS_PER_SWING];
  uint8_t n;
};

struct RingEntry {       // last status of a command id, so a resent FIRE is answered, never re-fired
  long id;
  uint8_t status;
  uint8_t reason;
  unsigned long value;
};

Servo servos[N_GATES];
Fire fireQueue[QUEUE_SIZE];
Swing swings[N_GATES];
RingEntry ring[RING_SIZE];
uint8_t ringNext;
LineState state;
const char *safeReason;
char bootId[5];
unsigned long lastRx;
unsigned long detachAt;
bool detachPending;
volatile long encoderCount;
char rxBuf[MAX_LINE + 1];
uint8_t rxLen;
bool rxOverflow;
char txBuf[96];

// ------------------------------------------------------------------------------ prototypes
void onEncoder();
void sendLine(const char *s);
void sendStatus(long id);
RingEntry *findRing(long id);
void setStatus(long id, uint8_t status, uint8_t reason, unsigned long value);
void openGate(uint8_t g, long id, unsigned long hold, unsigned long now);
void closeGate(uint8_t g, bool completed, unsigned long now);
void latchSafe(const char *reason, unsigned long now);
void handleLine(char *line, unsigned long now);
void handleFire(char *args, unsigned long now);
bool parseLong(const char *s, long *out);
uint8_t queueDepth();
void runTimers(unsigned long now);

// ------------------------------------------------------------------------------ setup / loop
void setup() {
  Serial.begin(115200);
  for (uint8_t g = 0; g < N_GATES; g++) {
    swings[g].open = false;
    swings[g].n = 0;
  }
  for (uint8_t i = 0; i < QUEUE_SIZE; i++) fireQueue[i].used = false;
  for (uint8_t i = 0; i < RING_SIZE; i++) ring[i].status = ST_NONE;
  ringNext = 0;
  rxLen = 0;
  rxOverflow = false;
  detachPending = false;
  encoderCount = 0;
  state = STATE_SAFE;                   // boot latched safe: nothing moves until the host ARMs
  safeReason = "BOOT";
  pinMode(ENCODER_PIN, INPUT_PULLUP);
  attachInterrupt(digitalPinToInterrupt(ENCODER_PIN), onEncoder, RISING);
  randomSeed(analogRead(A0) ^ micros());
  snprintf(bootId, sizeof(bootId), "%04lx", (unsigned long)random(0, 0xFFFF));
  lastRx = millis();
  snprintf(txBuf, sizeof(txBuf), "READY fw=%s gates=%u boot=%s state=SAFE", FW_VERSION, N_GATES, bootId);
  sendLine(txBuf);
}

void loop() {
  unsigned long now = millis();
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
}

void onEncoder() { encoderCount++; }

// ------------------------------------------------------------------------------ timers
void runTimers(unsigned long now) {
  for (uint8_t g = 0; g < N_GATES; g++) {          // releases first, as the emulator orders them
    if (swings[g].open && (long)(now - swings[g].until) >= 0) closeGate(g, true, now);
  }
  noInterrupts();
  long count = encoderCount;
  interrupts();
  while (true) {                                   // due fires, earliest first
    int best = -1;
    for (uint8_t i = 0; i < QUEUE_SIZE; i++) {
      Fire &f = fireQueue[i];
      if (!f.used) continue;
      bool due = f.byEncoder ? (f.enc <= count) : ((long)(now - f.due) >= 0);
      if (due && (best < 0 || (!f.byEncoder && (long)(f.due - fireQueue[best].due) < 0))) best = i;
    }
    if (best < 0) break;
    Fire &f = fireQueue[best];
    f.used = false;
    openGate(f.gate, f.id, f.hold, now);
  }
  if (state == STATE_ARMED && now - lastRx >= WATCHDOG_MS) latchSafe("HB_TIMEOUT", now);
  if (detachPending && (long)(now - detachAt) >= 0) {
    for (uint8_t g = 0; g < N_GATES; g++) servos[g].detach();   // de-energised = default route
    detachPending = false;
  }
}

// ------------------------------------------------------------------------------ gates
void openGate(uint8_t g, long id, unsigned long hold, unsigned long now) {
  Swing &s = swings[g];
  unsigned long until = now + hold;
  if (s.open) {
    if ((long)(until - s.until) > 0) s.until = until;
  } else {
    s.open = true;
    s.until = until;
    s.n = 0;
    servos[g].write(ANGLE_OPEN);
  }
  if (s.n < MAX_IDS_PER_SWING) s.ids[s.n++] = id;
}

void closeGate(uint8_t g, bool completed, unsigned long now) {
  Swing &s = swings[g];
  s.open = false;
  servos[g].write(ANGLE_CLOSED);
  for (uint8_t i = 0; i < s.n; i++) {
    if (completed) setStatus(s.ids[i], ST_DONE, 0, now);
    else setStatus(s.ids[i], ST_NAK, R_ABORTED, 0);
    sendStatus(s.ids[i]);
  }
  s.n = 0;
}

void latchSafe(const char *reason, unsigned long now) {
  for (uint8_t i = 0; i < QUEUE_SIZE; i++) {
    if (!fireQueue[i].used) continue;
    fireQueue[i].used = false;
    setStatus(fireQueue[i].id, ST_NAK, R_SAFE, 0);
    sendStatus(fireQueue[i].id);
  }
  for (uint8_t g = 0; g < N_GATES; g++) {
    if (swings[g].open) closeGate(g, false, now);
    servos[g].write(ANGLE_CLOSED);
  }
  detachAt = now + DETACH_AFTER_MS;
  detachPending = true;
  state = STATE_SAFE;
  safeReason = reason;
  snprintf(txBuf, sizeof(txBuf), "STATE SAFE reason=%s", reason);
  sendLine(txBuf);
}

// ------------------------------------------------------------------------------ id ring
RingEntry *findRing(long id) {
  for (uint8_t i = 0; i < RING_SIZE; i++) {
    if (ring[i].status != ST_NONE && ring[i].id == id) return &ring[i];
  }
  return NULL;
}

void setStatus(long id, uint8_t status, uint8_t reason, unsigned long value) {
  RingEntry *e = findRing(id);
  if (e == NULL) {
    e = &ring[ringNext];
    ringNext = (ringNext + 1) % RING_SIZE;
  }
  e->id = id;
  e->status = status;
  e->reason = reason;
  e->value = value;
}

void sendStatus(long id) {
  RingEntry *e = findRing(id);
  if (e == NULL) return;
  switch (e->status) {
    case ST_ACK: snprintf(txBuf, sizeof(txBuf), "ACK %ld due=%lu", id, e->value); break;
    case ST_ACK_ENC: snprintf(txBuf, sizeof(txBuf), "ACK %ld due_enc=%lu", id, e->value); break;
    case ST_DONE: snprintf(txBuf, sizeof(txBuf), "DONE %ld t=%lu", id, e->value); break;
    default: snprintf(txBuf, sizeof(txBuf), "NAK %ld %s", id, REASONS[e->reason]); break;
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

uint8_t queueDepth() {
  uint8_t n = 0;
  for (uint8_t i = 0; i < QUEUE_SIZE; i++) n += fireQueue[i].used ? 1 : 0;
  return n;
}

void handleLine(char *line, unsigned long now) {
  while (*line == ' ') line++;
  if (*line == '\0') return;
  lastRx = now;                                   // any well-formed line feeds the watchdog
  char *args = strchr(line, ' ');
  if (args != NULL) *args++ = '\0';
  for (char *p = line; *p; p++) *p = toupper(*p);
  if (strcmp(line, "HELLO") == 0) {
    snprintf(txBuf, sizeof(txBuf), "READY fw=%s gates=%u boot=%s state=%s", FW_VERSION, N_GATES, bootId,
             state == STATE_ARMED ? "ARMED" : "SAFE");
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
    snprintf(txBuf, sizeof(txBuf), "PONG %s q=%u state=%s t=%lu", seq ? seq : "0", queueDepth(),
             state == STATE_ARMED ? "ARMED" : "SAFE", now);
    sendLine(txBuf);
  } else if (strcmp(line, "FIRE") == 0) {
    handleFire(args, now);
  } else {
    sendLine("ERR BAD_CMD");
  }
}

void handleFire(char *args, unsigned long now) {
  char *tok = args ? strtok(args, " ") : NULL;
  long id;
  if (tok == NULL || strchr(tok, '=') != NULL || !parseLong(tok, &id)) {
    sendLine("ERR BAD_CMD");
    return;
  }
  if (findRing(id) != NULL) {                     // idempotent: repeat the status, never re-fire
    sendStatus(id);
    return;
  }
  long gate = 0, at = 0, enc = 0, hold = 0;
  bool hasGate = false, hasAt = false, hasEnc = false, hasHold = false, bad = false;
  while ((tok = strtok(NULL, " ")) != NULL) {
    char *eq = strchr(tok, '=');
    if (eq == NULL) continue;
    *eq = '\0';
    const char *val = eq + 1;
    if (strcmp(tok, "gate") == 0) { hasGate = true; bad |= !parseLong(val, &gate); }
    else if (strcmp(tok, "at") == 0) { hasAt = true; bad |= !parseLong(val, &at); }
    else if (strcmp(tok, "enc") == 0) { hasEnc = true; bad |= !parseLong(val, &enc); }
    else if (strcmp(tok, "hold") == 0) { hasHold = true; bad |= !parseLong(val, &hold); }
  }
  bad = bad || !hasGate || !hasHold || gate < 1 || gate > N_GATES || hold <= 0 || hold > (long)MAX_HOLD_MS;
  bad = bad || (hasAt == hasEnc) || (hasAt && at > (long)MAX_AT_MS);
  noInterrupts();
  long count = encoderCount;
  interrupts();
  if (bad) {
    setStatus(id, ST_NAK, R_BAD_ARG, 0);
  } else if (state != STATE_ARMED) {
    setStatus(id, ST_NAK, R_SAFE, 0);
  } else if ((hasAt && at < 0) || (hasEnc && enc <= count)) {
    setStatus(id, ST_NAK, R_LATE, 0);
  } else if (queueDepth() >= QUEUE_SIZE) {
    setStatus(id, ST_NAK, R_QUEUE_FULL, 0);
  } else {
    for (uint8_t i = 0; i < QUEUE_SIZE; i++) {
      Fire &f = fireQueue[i];
      if (f.used) continue;
      f.used = true;
      f.id = id;
      f.gate = (uint8_t)(gate - 1);
      f.byEncoder = hasEnc;
      f.due = now + (unsigned long)at;
      f.enc = enc;
      f.hold = (unsigned long)hold;
      break;
    }
    if (hasEnc) setStatus(id, ST_ACK_ENC, 0, (unsigned long)enc);
    else setStatus(id, ST_ACK, 0, now + (unsigned long)at);
  }
  sendStatus(id);
}

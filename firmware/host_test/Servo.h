// Host stand-in for the Arduino Servo library: records the last angle and attachment.
#pragma once
struct Servo {
  int angle = -1;
  bool attached = false;
  void attach(int) { attached = true; }
  void detach() { attached = false; }
  void write(int a) { angle = a; }
};

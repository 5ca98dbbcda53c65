//! Status LEDs: two lights that tell a person across the room what the box is doing.

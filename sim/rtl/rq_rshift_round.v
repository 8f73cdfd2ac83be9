`timescale 1ns/1ps
// repq-hw reference RTL: rounding arithmetic right shift (docs/ops/requantize.md "Primitives",
// docs/arith.md section 2). Combinational, synthesizable.
//
//   y = x / 2^s rounded with `mode`, s in [0, 62]; s = 0 is the identity.
//   q = x >>> s (floor quotient), r = low s bits of x (unsigned), h = 2^(s-1)
//   mode 0 half_up  : q + (r >= h)
//   mode 1 half_even: q + (r > h || (r == h && q[0]))      <- what the lowering uses everywhere
//   mode 2 half_away: q + (r > h || (r == h && x >= 0))
//   mode 3 floor    : q
// Mode ids are repq_hw.kernels.rounding.MODE_IDS. q + 1 never overflows for s >= 1.
module rq_rshift_round (
    input  wire signed [63:0] x,
    input  wire        [5:0]  s,
    input  wire        [1:0]  mode,
    output wire signed [63:0] y
);
    wire signed [63:0] q    = x >>> s;
    wire        [63:0] mask = ~(64'hFFFF_FFFF_FFFF_FFFF << s);
    wire        [63:0] r    = x & mask;
    wire        [63:0] h    = (s == 6'd0) ? 64'd0 : (64'd1 << (s - 6'd1));
    reg                up;
    always @* begin
        if (s == 6'd0)
            up = 1'b0;
        else begin
            case (mode)
                2'd0:    up = (r >= h);
                2'd1:    up = (r > h) || ((r == h) && q[0]);
                2'd2:    up = (r > h) || ((r == h) && !x[63]);
                default: up = 1'b0;
            endcase
        end
    end
    assign y = q + {63'd0, up};
endmodule

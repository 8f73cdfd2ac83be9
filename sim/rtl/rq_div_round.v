`timescale 1ns/1ps
// repq-hw reference RTL: sequential rounding division round_div(num, den, mode) (docs/ops/requantize.md,
// docs/arith.md section 2). Restoring division, BPC quotient bits per clock (BPC unrolled radix-2
// steps): ceil(ITER / BPC) clocks per quotient plus one for the rounding.
//
//   |num| < 2^ITER required (ITER <= 63), 0 < den < 2^63.
//   q0, r0 = |num| / den, |num| mod den                     (unsigned restoring division)
//   floor quotient:  num >= 0: q = q0, r = r0;   num < 0: q = -q0 - (r0 != 0), r = (r0 != 0) ? den - r0 : 0
//   rest = den - r;  up = r != 0 && (half_up: r >= rest | half_even: r > rest || (r == rest && q[0])
//                                    | half_away: r > rest || (r == rest && num >= 0) | floor: 0)
//   result = q + up
// The tie test compares r with den - r (no extra bit), exactly as repq_hw.kernels.rounding.round_div_ref.
module rq_div_round #(
    parameter integer ITER = 63,
    parameter integer BPC  = 4
) (
    input  wire               clk,
    input  wire               rst,
    input  wire               start,
    input  wire signed [63:0] num,
    input  wire        [63:0] den,
    input  wire        [1:0]  mode,
    output reg                busy,
    output reg                done,
    output reg  signed [63:0] result
);
    localparam integer ITER_R = ((ITER + BPC - 1) / BPC) * BPC;   // steps, a multiple of BPC (<= 64)
    localparam [63:0] QMASK = (ITER_R >= 64) ? ~64'd0 : ((64'd1 << ITER_R) - 64'd1);
    reg [63:0] quo;       // dividend bits leave at bit ITER-1, quotient bits enter at bit 0
    reg [63:0] rem;       // < den
    reg [63:0] d;
    reg        neg;
    reg [6:0]  cnt;
    reg [1:0]  md;
    // step temporaries (blocking, inside the clocked block)
    reg [64:0] rem_sh;
    reg [63:0] rem_t, quo_t, q0, r_f, rest;
    integer b;
    reg signed [63:0] q_f;
    reg up;
    always @(posedge clk) begin
        if (rst) begin
            busy <= 1'b0;
            done <= 1'b0;
        end else begin
            done <= 1'b0;
            if (start && !busy) begin
                busy <= 1'b1;
                neg  <= num[63];
                quo  <= num[63] ? -num : num;
                rem  <= 64'd0;
                d    <= den;
                md   <= mode;
                cnt  <= ITER_R / BPC;
            end else if (busy) begin
                if (cnt != 7'd0) begin
                    rem_t = rem;
                    quo_t = quo;
                    for (b = 0; b < BPC; b = b + 1) begin
                        rem_sh = {rem_t, quo_t[ITER_R-1]};
                        if (rem_sh >= {1'b0, d}) begin
                            rem_t = rem_sh[63:0] - d;
                            quo_t = {quo_t[62:0], 1'b1};
                        end else begin
                            rem_t = rem_sh[63:0];
                            quo_t = {quo_t[62:0], 1'b0};
                        end
                    end
                    rem <= rem_t;
                    quo <= quo_t;
                    cnt <= cnt - 7'd1;
                end else begin
                    q0 = quo & QMASK;
                    if (neg && rem != 64'd0) begin
                        q_f = -$signed(q0) - 64'sd1;
                        r_f = d - rem;
                    end else begin
                        q_f = neg ? -$signed(q0) : $signed(q0);
                        r_f = rem;
                    end
                    rest = d - r_f;
                    if (r_f == 64'd0)
                        up = 1'b0;
                    else begin
                        case (md)
                            2'd0:    up = (r_f >= rest);
                            2'd1:    up = (r_f > rest) || ((r_f == rest) && q_f[0]);
                            2'd2:    up = (r_f > rest) || ((r_f == rest) && !neg);
                            default: up = 1'b0;
                        endcase
                    end
                    result <= q_f + {63'd0, up};
                    busy   <= 1'b0;
                    done   <= 1'b1;
                end
            end
        end
    end
endmodule

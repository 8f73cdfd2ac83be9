`timescale 1ns/1ps
// repq-hw reference RTL: the requantizer (docs/ops/requantize.md, docs/arith.md section 3).
//
//   P = acc * M                 64-bit signed; M is a signed int32 in (-2^31, 2^31): a LayerNorm with a
//                               negative gamma carries the sign in M
//   V = P + offset              64-bit (|V| < 2^63 is guaranteed by the lowering / validator)
//   R = rshift_round(V, shift)  shift in [0, 62], rounding mode (the lowering uses half_even, id 1)
//   y = clamp(R, out_min - zp, out_max - zp) + zp      (= clamp(R + zp, out_min, out_max), no wide adder)
//
// rq_requant_core is the combinational back end (V -> y); rq_requant is a 2-stage pipeline
// (stage 1: multiply-add, stage 2: round, clamp, add the zero point), one element per clock.
module rq_requant_core (
    input  wire signed [63:0] v,
    input  wire        [5:0]  shift,
    input  wire        [1:0]  mode,
    input  wire signed [31:0] zp,
    input  wire signed [31:0] out_min,
    input  wire signed [31:0] out_max,
    output wire signed [31:0] y
);
    wire signed [63:0] r;
    rq_rshift_round u_round (.x(v), .s(shift), .mode(mode), .y(r));
    wire signed [63:0] lo = $signed({{32{out_min[31]}}, out_min}) - $signed({{32{zp[31]}}, zp});
    wire signed [63:0] hi = $signed({{32{out_max[31]}}, out_max}) - $signed({{32{zp[31]}}, zp});
    wire signed [63:0] c  = (r < lo) ? lo : ((r > hi) ? hi : r);
    wire signed [63:0] o  = c + $signed({{32{zp[31]}}, zp});
    assign y = o[31:0];
endmodule

module rq_requant #(
    parameter integer ACC_W = 32            // accumulator width (<= 32 so that acc*M fits 64 bits)
) (
    input  wire                    clk,
    input  wire                    rst,
    input  wire                    in_valid,
    input  wire signed [ACC_W-1:0] acc,
    input  wire signed [31:0]      mult,
    input  wire        [5:0]       shift,
    input  wire signed [63:0]      offset,
    input  wire signed [31:0]      zp,
    input  wire signed [31:0]      out_min,
    input  wire signed [31:0]      out_max,
    input  wire        [1:0]       mode,
    output reg                     out_valid,
    output reg  signed [31:0]      y
);
    // stage 1
    reg               s1_valid;
    reg signed [63:0] s1_v;
    reg        [5:0]  s1_shift;
    wire signed [63:0] acc64  = {{(64-ACC_W){acc[ACC_W-1]}}, acc};
    wire signed [63:0] mult64 = {{32{mult[31]}}, mult};
    always @(posedge clk) begin
        if (rst) begin
            s1_valid <= 1'b0;
        end else begin
            s1_valid <= in_valid;
            s1_v     <= acc64 * mult64 + offset;
            s1_shift <= shift;
        end
    end
    // stage 2
    wire signed [31:0] y_c;
    rq_requant_core u_core (.v(s1_v), .shift(s1_shift), .mode(mode), .zp(zp), .out_min(out_min),
                            .out_max(out_max), .y(y_c));
    always @(posedge clk) begin
        if (rst) begin
            out_valid <= 1'b0;
        end else begin
            out_valid <= s1_valid;
            y         <= y_c;
        end
    end
endmodule
